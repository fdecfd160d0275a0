#include "cli/format.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <string>
#include <vector>

#include "layerstore/errors.h"

namespace kiln::cli {

namespace {
size_t display_width(const std::string& s) {
  // Count UTF-8 code points, so "…" is one column.
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}
}  // namespace

std::string format_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], display_width(row[i]));
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(std::max<size_t>(10, widths[i] + 3) - display_width(row[i]), ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string human_since(int64_t then, int64_t now) {
  int64_t secs = std::max<int64_t>(0, now - then);
  std::string d;
  auto plural = [](int64_t n, const char* unit) {
    return fmt::format("{} {}{}", n, unit, n == 1 ? "" : "s");
  };
  if (secs < 1) {
    d = "Less than a second";
  } else if (secs == 1) {
    d = "1 second";
  } else if (secs < 60) {
    d = fmt::format("{} seconds", secs);
  } else if (secs / 60 == 1) {
    d = "About a minute";
  } else if (secs < 3600) {
    d = fmt::format("{} minutes", secs / 60);
  } else if (secs / 3600 == 1) {
    d = "About an hour";
  } else if (secs < 48 * 3600) {
    d = fmt::format("{} hours", secs / 3600);
  } else if (secs < 7 * 24 * 3600 * 2) {
    d = plural(secs / (24 * 3600), "day");
  } else if (secs < 30 * 24 * 3600 * 3) {
    d = plural(secs / (7 * 24 * 3600), "week");
  } else if (secs < 365 * 24 * 3600 * 2) {
    d = plural(secs / (30 * 24 * 3600), "month");
  } else {
    d = plural(secs / (365 * 24 * 3600), "year");
  }
  return d + " ago";
}

std::string ellipsis(const std::string& s, size_t width) {
  if (display_width(s) <= width) return s;
  std::string out;
  size_t cols = 0;
  for (size_t i = 0; i < s.size() && cols < width - 1;) {
    size_t len = 1;
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0xF0)
      len = 4;
    else if (c >= 0xE0)
      len = 3;
    else if (c >= 0xC0)
      len = 2;
    out += s.substr(i, len);
    i += len;
    ++cols;
  }
  return out + "…";
}

namespace {

const nlohmann::json& lookup(const nlohmann::json& value, const std::string& path, const std::string& tmpl) {
  static const nlohmann::json kNull;
  if (path == ".") return value;
  if (!path.starts_with("."))
    throw UsageError(fmt::format("--format `{}`: unsupported expression `{}`", tmpl, path));
  const nlohmann::json* cur = &value;
  size_t start = 1;
  while (start < path.size()) {
    size_t end = path.find('.', start);
    std::string key = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!cur->is_object() || !cur->contains(key)) return kNull;
    cur = &(*cur)[key];
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return *cur;
}

std::string plain(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "<no value>";
  if (v.is_array()) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? " " : "") + plain(v[i]);
    return s + "]";
  }
  if (v.is_object()) {
    std::string s = "map[";
    bool first = true;
    for (auto& [k, e] : v.items()) {
      s += (first ? "" : " ") + k + ":" + plain(e);
      first = false;
    }
    return s + "]";
  }
  return v.dump();
}

// Go's `index X KEY...` as docker's templates use it: `index .RepoDigests 0`, `index .Config.Labels
// "version"`. A list's index out of range is an error, as in Go; a map's missing key gives the
// empty string (the zero value of Docker's map[string]string).
std::string index_of(const nlohmann::json& value, const std::string& args, const std::string& tmpl) {
  std::vector<std::string> words;
  for (size_t i = 0; i < args.size();) {
    if (args[i] == ' ') {
      ++i;
    } else if (args[i] == '"') {
      size_t end = args.find('"', i + 1);
      if (end == std::string::npos) throw UsageError(fmt::format("--format `{}`: unclosed `\"`", tmpl));
      words.push_back(args.substr(i, end + 1 - i));
      i = end + 1;
    } else {
      size_t end = args.find(' ', i);
      words.push_back(args.substr(i, end == std::string::npos ? std::string::npos : end - i));
      i = end == std::string::npos ? args.size() : end;
    }
  }
  if (words.size() < 2) throw UsageError(fmt::format("--format `{}`: `index` needs a value and a key", tmpl));
  const nlohmann::json* cur = &lookup(value, words[0], tmpl);
  for (size_t k = 1; k < words.size(); ++k) {
    const std::string& key = words[k];
    if (key.starts_with('"')) {
      std::string name = key.substr(1, key.size() - 2);
      if (cur->is_null()) return "";  // Go: a nil map has every key, empty
      if (!cur->is_object())
        throw Error(fmt::format("--format `{}`: cannot index {} with {}", tmpl, plain(*cur), key));
      if (!cur->contains(name)) return "";
      cur = &(*cur)[name];
    } else {
      size_t at = 0;
      auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), at);
      if (ec != std::errc() || end != key.data() + key.size())
        throw UsageError(
            fmt::format("--format `{}`: `index` key `{}` is not a number or a \"string\"", tmpl, key));
      if (cur->is_null())  // Go: a nil slice has no element
        throw Error(fmt::format("--format `{}`: error calling index: index out of range: {}", tmpl, at));
      if (!cur->is_array())
        throw Error(fmt::format("--format `{}`: cannot index {} with {}", tmpl, plain(*cur), key));
      if (at >= cur->size())
        throw Error(fmt::format("--format `{}`: error calling index: index out of range: {}", tmpl, at));
      cur = &(*cur)[at];
    }
  }
  return plain(*cur);
}

}  // namespace

std::string render_template(const std::string& tmpl, const nlohmann::json& value) {
  std::string out;
  size_t pos = 0;
  while (pos < tmpl.size()) {
    size_t open = tmpl.find("{{", pos);
    std::string literal = tmpl.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
    for (size_t i = 0; i < literal.size(); ++i) {
      if (literal[i] == '\\' && i + 1 < literal.size() && (literal[i + 1] == 't' || literal[i + 1] == 'n')) {
        out += literal[i + 1] == 't' ? '\t' : '\n';
        ++i;
      } else {
        out += literal[i];
      }
    }
    if (open == std::string::npos) break;
    size_t close = tmpl.find("}}", open);
    if (close == std::string::npos) throw UsageError(fmt::format("--format `{}`: unclosed `{{{{`", tmpl));
    std::string expr = tmpl.substr(open + 2, close - open - 2);
    expr.erase(0, expr.find_first_not_of(' '));
    expr.erase(expr.find_last_not_of(' ') + 1);
    if (expr.starts_with("json ")) {
      std::string arg = expr.substr(5);
      arg.erase(0, arg.find_first_not_of(' '));
      out += lookup(value, arg, tmpl).dump();
    } else if (expr.starts_with("index ")) {
      out += index_of(value, expr.substr(6), tmpl);
    } else {
      out += plain(lookup(value, expr, tmpl));
    }
    pos = close + 2;
  }
  return out;
}

bool stdout_is_terminal() {
  return ::isatty(STDOUT_FILENO) == 1;
}
bool stderr_is_terminal() {
  return ::isatty(STDERR_FILENO) == 1;
}

}  // namespace kiln::cli

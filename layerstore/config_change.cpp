#include "layerstore/config_change.h"

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "layerstore/errors.h"
#include "layerstore/fsutil.h"

namespace kiln {

using nlohmann::json;

namespace {

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

// Splits on unquoted whitespace, removing quotes and backslash escapes the way Docker's word
// processing does for these instructions (variables are left as written).
std::vector<std::string> split_words(std::string_view s, std::string_view change) {
  std::vector<std::string> words;
  std::string cur;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (quote) {
      if (c == quote) {
        quote = 0;
      } else if (c == '\\' && quote == '"' && i + 1 < s.size()) {
        cur.push_back(s[++i]);
      } else {
        cur.push_back(c);
      }
      continue;
    }
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (in_word) words.push_back(std::exchange(cur, {}));
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '\\' && i + 1 < s.size()) {
      cur.push_back(s[++i]);
    } else {
      cur.push_back(c);
    }
  }
  if (quote) throw UsageError(fmt::format("--change `{}`: unterminated quote", change));
  if (in_word) words.push_back(cur);
  return words;
}

std::optional<std::vector<std::string>> json_array(std::string_view s) {
  std::string t = trim(s);
  if (t.empty() || t.front() != '[') return std::nullopt;
  try {
    json j = json::parse(t);
    if (!j.is_array()) return std::nullopt;
    std::vector<std::string> out;
    for (const auto& e : j) {
      if (!e.is_string()) return std::nullopt;
      out.push_back(e.get<std::string>());
    }
    return out;
  } catch (const json::exception&) {
    return std::nullopt;  // Docker falls back to shell form when the JSON is not valid
  }
}

using Splitter = std::function<std::vector<std::string>(std::string_view)>;

// key=value pairs (ENV, LABEL); the legacy single "key value" form is accepted for ENV and LABEL.
std::vector<std::pair<std::string, std::string>> key_values(std::string_view args, std::string_view change,
                                                            const Splitter& split) {
  std::vector<std::pair<std::string, std::string>> out;
  auto words = split(args);
  if (words.empty()) throw UsageError(fmt::format("--change `{}`: missing arguments", change));
  if (words[0].find('=') == std::string::npos) {
    // Legacy form: the first word is the key, the rest of the line (trimmed) the value.
    std::string rest = trim(args);
    auto sp = rest.find_first_of(" \t");
    if (sp == std::string::npos) throw UsageError(fmt::format("--change `{}`: missing value", change));
    auto value_words = split(std::string_view(rest).substr(sp));
    std::string value;
    for (size_t i = 0; i < value_words.size(); ++i) value += (i ? " " : "") + value_words[i];
    out.emplace_back(words[0], value);
    return out;
  }
  for (const auto& w : words) {
    auto eq = w.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw UsageError(fmt::format("--change `{}`: `{}` is not of the form key=value", change, w));
    }
    out.emplace_back(w.substr(0, eq), w.substr(eq + 1));
  }
  return out;
}

// An absolute, lexically clean path, as Docker cleans WORKDIR.
std::string clean_path(const std::string& path) {
  return "/" + join_components(normalize_clamped(path));
}

}  // namespace

void apply_config_change(json& config, std::string_view change, const WordSplitter& words) {
  if (!config.is_object()) config = json::object();
  // Variables come from the Env the config has before this change (Docker expands every pair of
  // one ENV with the same environment).
  std::vector<std::string> env_before;
  if (config.contains("Env") && config["Env"].is_array()) {
    for (const auto& e : config["Env"]) {
      if (e.is_string()) env_before.push_back(e.get<std::string>());
    }
  }
  Splitter split = [&](std::string_view text) {
    return words ? words(text, env_before) : split_words(text, change);
  };
  std::string text = trim(change);
  auto sp = text.find_first_of(" \t");
  std::string keyword = text.substr(0, sp);
  std::string args = sp == std::string::npos ? "" : trim(std::string_view(text).substr(sp));
  std::transform(keyword.begin(), keyword.end(), keyword.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  if (keyword.empty()) throw UsageError("--change: empty instruction");
  if (args.empty()) throw UsageError(fmt::format("--change `{}`: {} requires arguments", change, keyword));

  if (keyword == "CMD" || keyword == "ENTRYPOINT") {
    json cmd = json::array();
    if (auto arr = json_array(args)) {
      for (auto& a : *arr) cmd.push_back(a);
    } else {
      cmd = json::array({"/bin/sh", "-c", args});
    }
    config[keyword == "CMD" ? "Cmd" : "Entrypoint"] = cmd;
  } else if (keyword == "ENV") {
    json env = config.value("Env", json::array());
    if (!env.is_array()) env = json::array();
    for (auto& [k, v] : key_values(args, change, split)) {
      std::string entry = k + "=" + v;
      auto it = std::find_if(env.begin(), env.end(), [&](const json& e) {
        return e.is_string() && e.get<std::string>().starts_with(k + "=");
      });
      if (it != env.end()) {
        *it = entry;
      } else {
        env.push_back(entry);
      }
    }
    config["Env"] = env;
  } else if (keyword == "LABEL") {
    json labels = config.value("Labels", json::object());
    if (labels.is_null()) labels = json::object();
    for (auto& [k, v] : key_values(args, change, split)) labels[k] = v;
    config["Labels"] = labels;
  } else if (keyword == "EXPOSE") {
    json ports = config.value("ExposedPorts", json::object());
    if (ports.is_null()) ports = json::object();
    for (const auto& w : split(args)) {
      std::string port = w, proto = "tcp";
      if (auto slash = w.find('/'); slash != std::string::npos) {
        port = w.substr(0, slash);
        proto = w.substr(slash + 1);
        std::transform(proto.begin(), proto.end(), proto.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      }
      if (proto != "tcp" && proto != "udp" && proto != "sctp") {
        throw UsageError(fmt::format("--change `{}`: invalid protocol `{}`", change, proto));
      }
      auto dash = port.find('-');
      auto parse_port = [&](const std::string& p) {
        if (p.empty() || p.size() > 5 || !std::all_of(p.begin(), p.end(), ::isdigit) ||
            std::stoi(p) > 65535) {
          throw UsageError(fmt::format("--change `{}`: invalid port `{}`", change, w));
        }
        return std::stoi(p);
      };
      int lo = parse_port(port.substr(0, dash));
      int hi = dash == std::string::npos ? lo : parse_port(port.substr(dash + 1));
      if (hi < lo) throw UsageError(fmt::format("--change `{}`: invalid port range `{}`", change, w));
      for (int p = lo; p <= hi; ++p) ports[fmt::format("{}/{}", p, proto)] = json::object();
    }
    config["ExposedPorts"] = ports;
  } else if (keyword == "USER") {
    config["User"] = split(args).empty() ? "" : split(args)[0];
  } else if (keyword == "VOLUME") {
    json vols = config.value("Volumes", json::object());
    if (vols.is_null()) vols = json::object();
    auto list = json_array(args);
    for (const auto& v : list ? *list : split(args)) {
      if (v.empty()) throw UsageError(fmt::format("--change `{}`: empty volume path", change));
      vols[v] = json::object();
    }
    config["Volumes"] = vols;
  } else if (keyword == "WORKDIR") {
    auto parts = split(args);
    std::string dir = parts.empty() ? "" : parts[0];
    if (!dir.starts_with("/")) dir = config.value("WorkingDir", std::string("/")) + "/" + dir;
    config["WorkingDir"] = clean_path(dir);
  } else {
    throw UsageError(fmt::format(
        "--change `{}`: {} is not allowed here (allowed: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, "
        "VOLUME, WORKDIR)",
        change, keyword));
  }
}

}  // namespace kiln

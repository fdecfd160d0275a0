#include "parser/instruction_rules.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <stdexcept>
#include <vector>

#include "parser/text.h"

namespace kiln::parser {

namespace {

enum class FlagType { kBool, kString, kStrings };

struct FlagRule {
  std::string_view name;
  FlagType type;
};

// The flags each instruction accepts, as the Dockerfile frontend (syntax 1.x) accepts them.
std::span<const FlagRule> flag_rules(Keyword keyword) {
  static constexpr FlagRule kAdd[] = {{"chown", FlagType::kString},      {"chmod", FlagType::kString},
                                      {"link", FlagType::kBool},         {"checksum", FlagType::kString},
                                      {"keep-git-dir", FlagType::kBool}, {"exclude", FlagType::kStrings},
                                      {"unpack", FlagType::kBool}};
  static constexpr FlagRule kCopy[] = {{"chown", FlagType::kString}, {"chmod", FlagType::kString},
                                       {"from", FlagType::kString},  {"link", FlagType::kBool},
                                       {"parents", FlagType::kBool}, {"exclude", FlagType::kStrings}};
  static constexpr FlagRule kFrom[] = {{"platform", FlagType::kString}};
  static constexpr FlagRule kRun[] = {
      {"mount", FlagType::kStrings}, {"network", FlagType::kString}, {"security", FlagType::kString}};
  static constexpr FlagRule kHealthcheck[] = {{"interval", FlagType::kString},
                                              {"timeout", FlagType::kString},
                                              {"start-period", FlagType::kString},
                                              {"start-interval", FlagType::kString},
                                              {"retries", FlagType::kString}};
  switch (keyword) {
    case Keyword::kAdd:
      return kAdd;
    case Keyword::kCopy:
      return kCopy;
    case Keyword::kFrom:
      return kFrom;
    case Keyword::kRun:
      return kRun;
    case Keyword::kHealthcheck:
      return kHealthcheck;
    default:
      return {};
  }
}

class Checker {
 public:
  Checker(const Instruction& instruction, const Dockerfile& file)
      : instruction_(instruction), file_(file), name_(text::to_upper(keyword_name(instruction.keyword))) {}

  [[noreturn]] void fail(Position where, const std::string& message) const {
    throw ParseError(message, where, std::string(file_.line_text(where.line)));
  }
  [[noreturn]] void fail(const std::string& message) const { fail(instruction_.start, message); }

  Position argument_position(std::size_t index) const {
    return index < instruction_.argument_positions.size() ? instruction_.argument_positions[index]
                                                          : instruction_.start;
  }

  void check_flags() const {
    std::span<const FlagRule> rules = flag_rules(instruction_.keyword);
    std::vector<std::string_view> seen;
    for (const Flag& flag : instruction_.flags) {
      if (flag.text.rfind("--", 0) != 0)
        fail(flag.position, fmt::format("{}: flag \"{}\" should start with --", name_, flag.text));
      std::string_view name = flag.name();
      auto rule = std::find_if(rules.begin(), rules.end(), [&](const FlagRule& r) { return r.name == name; });
      if (rule == rules.end()) {
        std::vector<std::string_view> names;
        for (const FlagRule& r : rules) names.push_back(r.name);
        std::string suggestion = text::closest_match(name, names);
        std::string message = fmt::format("unknown flag \"--{}\" for {}", name, name_);
        if (!suggestion.empty()) message += fmt::format(" (did you mean \"--{}\"?)", suggestion);
        fail(flag.position, message);
      }
      if (rule->type != FlagType::kStrings && std::find(seen.begin(), seen.end(), name) != seen.end()) {
        fail(flag.position, fmt::format("{}: duplicate flag \"--{}\"", name_, name));
      }
      seen.push_back(name);
      std::optional<std::string_view> value = flag.value();
      if (rule->type == FlagType::kBool) {
        if (value && value->empty())
          fail(flag.position, fmt::format("{}: missing a value on flag \"--{}\"", name_, name));
        if (value && !text::equals_ignoring_case(*value, "true") &&
            !text::equals_ignoring_case(*value, "false")) {
          fail(flag.position, fmt::format("{}: expecting a boolean value for flag \"--{}\", not \"{}\"",
                                          name_, name, *value));
        }
      } else if (!value) {
        fail(flag.position, fmt::format("{}: missing a value on flag \"--{}\"", name_, name));
      }
    }
  }

  void check_values() const {
    if (instruction_.keyword == Keyword::kRun) {
      if (const Flag* network = instruction_.find_flag("network")) {
        std::string_view mode = *network->value();
        if (mode != "default" && mode != "none" && mode != "host") {
          fail(network->position,
               fmt::format("RUN: unsupported network mode \"{}\" (use default, none or host)", mode));
        }
      }
      if (const Flag* security = instruction_.find_flag("security")) {
        std::string_view mode = *security->value();
        if (mode != "sandbox" && mode != "insecure") {
          fail(security->position,
               fmt::format("RUN: unsupported security mode \"{}\" (use sandbox or insecure)", mode));
        }
      }
    }
    if (instruction_.keyword == Keyword::kHealthcheck) {
      for (std::string_view name : {"interval", "timeout", "start-period", "start-interval"}) {
        const Flag* flag = instruction_.find_flag(name);
        if (!flag || flag->value()->empty()) continue;
        std::optional<std::chrono::nanoseconds> duration = parse_duration(*flag->value());
        if (!duration) {
          fail(flag->position,
               fmt::format("HEALTHCHECK: invalid duration \"{}\" for --{}", *flag->value(), name));
        }
        if (duration->count() != 0 && *duration < std::chrono::milliseconds(1)) {
          fail(flag->position, fmt::format("HEALTHCHECK: --{} cannot be less than 1ms", name));
        }
      }
      if (const Flag* retries = instruction_.find_flag("retries"); retries && !retries->value()->empty()) {
        std::string_view value = *retries->value();
        // Docker reads it as a 32-bit integer.
        std::optional<long long> parsed = text::parse_integer(value);
        if (!parsed || *parsed > 2147483647LL || *parsed < -2147483648LL) {
          fail(retries->position,
               fmt::format("HEALTHCHECK: --retries must be an integer, not \"{}\"", value));
        }
        long long count = *parsed;
        if (count < 0)
          fail(retries->position, fmt::format("HEALTHCHECK: --retries cannot be negative ({})", count));
      }
    }
  }

  void check_arguments() const {
    const Instruction& ins = instruction_;
    const std::size_t count = ins.form == ArgumentForm::kKeyValues ? ins.pairs.size() : ins.arguments.size();
    auto at_least_one = [&] {
      if (count == 0) fail(fmt::format("{} requires at least one argument", name_));
    };
    auto exactly_one = [&] {
      if (count != 1) fail(fmt::format("{} requires exactly one argument", name_));
    };
    switch (ins.keyword) {
      case Keyword::kEnv:
      case Keyword::kLabel:
      case Keyword::kArg:
        at_least_one();
        for (std::size_t i = 0; i < ins.pairs.size(); ++i) {
          if (ins.pairs[i].key.empty())
            fail(argument_position(i), fmt::format("{} names can not be blank", name_));
        }
        break;
      case Keyword::kMaintainer:
      case Keyword::kUser:
      case Keyword::kWorkdir:
      case Keyword::kStopsignal:
        exactly_one();
        break;
      case Keyword::kAdd:
      case Keyword::kCopy:
        if (count < 2) {
          fail(fmt::format(
              "{} requires at least two arguments, but only {} provided; the destination could not be "
              "determined",
              name_, count == 0 ? "none was" : "one was"));
        }
        if (is_heredoc_word(ins.arguments.back())) {
          fail(argument_position(count - 1),
               fmt::format("{} cannot accept a heredoc as a destination", name_));
        }
        break;
      case Keyword::kFrom:
        check_from();
        break;
      case Keyword::kOnbuild:
      case Keyword::kExpose:
        at_least_one();
        break;
      case Keyword::kRun:
        if (count == 0) fail("RUN requires at least one argument: the command to run");
        break;
      case Keyword::kVolume:
        at_least_one();
        for (std::size_t i = 0; i < ins.arguments.size(); ++i) {
          if (text::trim_space(ins.arguments[i]).empty()) {
            fail(argument_position(i), "VOLUME specified can not be an empty string");
          }
        }
        break;
      case Keyword::kShell:
        if (ins.form != ArgumentForm::kExec) {
          fail(ins.invalid_json ? *ins.invalid_json : argument_position(0),
               ins.invalid_json
                   ? "SHELL requires the arguments to be in JSON form, and this JSON array is not valid"
                   : "SHELL requires the arguments to be in JSON form");
        }
        if (count == 0) fail("SHELL requires at least one argument");
        break;
      case Keyword::kHealthcheck:
        check_healthcheck();
        break;
      case Keyword::kCmd:
      case Keyword::kEntrypoint:
        break;
    }
  }

 private:
  void check_from() const {
    const std::vector<std::string>& args = instruction_.arguments;
    if (args.size() == 3 && text::equals_ignoring_case(args[1], "as")) {
      std::string name = text::to_lower(args[2]);
      bool valid =
          !name.empty() && name[0] >= 'a' && name[0] <= 'z' &&
          std::all_of(name.begin(), name.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
          });
      if (!valid) {
        fail(argument_position(2),
             fmt::format("invalid name for build stage: \"{}\", name can't start with a number "
                         "or contain symbols",
                         args[2]));
      }
      if (name == "scratch" || name == "context") {
        fail(argument_position(2), fmt::format("invalid name for build stage: \"{}\" is reserved", args[2]));
      }
    } else if (args.size() != 1) {
      fail(args.size() == 3 ? argument_position(1) : instruction_.start,
           "FROM requires either one or three arguments (FROM image [AS name])");
    }
  }

  void check_healthcheck() const {
    const Instruction& ins = instruction_;
    if (ins.healthcheck_kind.empty()) fail("HEALTHCHECK requires at least one argument");
    std::string kind = text::to_upper(ins.healthcheck_kind);
    if (kind == "NONE") {
      if (!ins.arguments.empty()) fail(argument_position(0), "HEALTHCHECK NONE takes no arguments");
      return;
    }
    if (kind != "CMD")
      fail(fmt::format("unknown type \"{}\" in HEALTHCHECK (try CMD)", ins.healthcheck_kind));
    if (ins.arguments.empty()) fail("missing command after HEALTHCHECK CMD");
  }

  const Instruction& instruction_;
  const Dockerfile& file_;
  std::string name_;
};

}  // namespace

void check_instruction(const Instruction& instruction, const Dockerfile& file) {
  Checker checker(instruction, file);
  checker.check_flags();
  checker.check_values();
  checker.check_arguments();
  if (instruction.trigger) check_instruction(*instruction.trigger, file);
}

std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text) {
  // Go's grammar: [-+]?(number unit)+ with units ns, us, µs, ms, s, m, h; "0" alone is allowed.
  std::string_view s = text;
  bool negative = false;
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return std::chrono::nanoseconds(0);
  if (s.empty()) return std::nullopt;
  long double total = 0;
  while (!s.empty()) {
    std::size_t digits = 0;
    long double value = 0;
    while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') {
      value = value * 10 + (s[digits] - '0');
      ++digits;
    }
    std::size_t pos = digits;
    std::size_t fraction_digits = 0;
    if (pos < s.size() && s[pos] == '.') {
      ++pos;
      long double scale = 0.1L;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
        value += (s[pos] - '0') * scale;
        scale /= 10;
        ++pos;
        ++fraction_digits;
      }
    }
    if (digits == 0 && fraction_digits == 0) return std::nullopt;
    std::size_t unit_end = pos;
    while (unit_end < s.size() && !(s[unit_end] >= '0' && s[unit_end] <= '9') && s[unit_end] != '.')
      ++unit_end;
    std::string_view unit = s.substr(pos, unit_end - pos);
    long double nanos_per_unit = 0;
    if (unit == "ns") {
      nanos_per_unit = 1;
    } else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") {
      nanos_per_unit = 1e3L;
    } else if (unit == "ms") {
      nanos_per_unit = 1e6L;
    } else if (unit == "s") {
      nanos_per_unit = 1e9L;
    } else if (unit == "m") {
      nanos_per_unit = 60e9L;
    } else if (unit == "h") {
      nanos_per_unit = 3600e9L;
    } else {
      return std::nullopt;
    }
    total += value * nanos_per_unit;
    if (total > 9.2e18L) return std::nullopt;  // Go reports overflow
    s.remove_prefix(unit_end);
  }
  auto nanos = static_cast<std::int64_t>(std::llround(static_cast<double>(total)));
  return std::chrono::nanoseconds(negative ? -nanos : nanos);
}

std::vector<std::string> csv_fields(std::string_view line) {
  std::vector<std::string> fields;
  std::size_t pos = 0;
  for (;;) {
    std::string field;
    if (pos < line.size() && line[pos] == '"') {
      ++pos;
      for (;;) {
        if (pos >= line.size()) throw std::invalid_argument("extraneous or missing \" in quoted field");
        if (line[pos] == '"') {
          if (pos + 1 < line.size() && line[pos + 1] == '"') {
            field += '"';
            pos += 2;
            continue;
          }
          ++pos;
          break;
        }
        field += line[pos++];
      }
      if (pos < line.size() && line[pos] != ',')
        throw std::invalid_argument("extraneous or missing \" in quoted field");
    } else {
      while (pos < line.size() && line[pos] != ',') {
        if (line[pos] == '"') throw std::invalid_argument("bare \" in non-quoted field");
        field += line[pos++];
      }
    }
    fields.push_back(std::move(field));
    if (pos >= line.size()) break;
    ++pos;  // the comma
  }
  return fields;
}

namespace {

bool parse_bool_value(std::string_view key, std::string_view value) {
  if (text::equals_ignoring_case(value, "true") || value == "1") return true;
  if (text::equals_ignoring_case(value, "false") || value == "0") return false;
  throw std::invalid_argument(
      fmt::format("invalid value \"{}\" for \"{}\" (want true or false)", value, key));
}

std::int64_t parse_integer(std::string_view key, std::string_view value) {
  std::optional<long long> number = text::parse_integer(value);
  if (!number) {
    throw std::invalid_argument(fmt::format("invalid value \"{}\" for \"{}\" (want an integer)", value, key));
  }
  return *number;
}

// Docker's units.RAMInBytes: a number with an optional b/k/m/g/t/p suffix (binary multiples).
std::int64_t parse_size(std::string_view value) {
  std::string_view digits = value;
  std::int64_t multiplier = 1;
  std::string lowered = text::to_lower(value);
  std::string_view suffix_text = lowered;
  while (!suffix_text.empty() && !(suffix_text.back() >= '0' && suffix_text.back() <= '9') &&
         suffix_text.back() != '.') {
    suffix_text.remove_suffix(1);
  }
  std::string suffix = lowered.substr(suffix_text.size());
  digits = value.substr(0, suffix_text.size());
  if (suffix == "" || suffix == "b") {
    multiplier = 1;
  } else if (suffix == "k" || suffix == "kb" || suffix == "kib") {
    multiplier = 1LL << 10;
  } else if (suffix == "m" || suffix == "mb" || suffix == "mib") {
    multiplier = 1LL << 20;
  } else if (suffix == "g" || suffix == "gb" || suffix == "gib") {
    multiplier = 1LL << 30;
  } else if (suffix == "t" || suffix == "tb" || suffix == "tib") {
    multiplier = 1LL << 40;
  } else {
    throw std::invalid_argument(fmt::format("invalid size \"{}\"", value));
  }
  return parse_integer("size", digits) * multiplier;
}

}  // namespace

std::string expand_mount_spec(std::string_view spec,
                              const std::function<std::string(std::string_view)>& expand) {
  std::string out;
  for (const std::string& field : csv_fields(spec)) {
    std::string expanded = field;
    std::size_t equals = field.find('=');
    if (equals != std::string::npos)
      expanded = field.substr(0, equals + 1) + expand(std::string_view(field).substr(equals + 1));
    if (!out.empty()) out += ',';
    if (expanded.find_first_of(",\"") != std::string::npos) {
      out += '"';
      for (char c : expanded) {
        if (c == '"') out += '"';
        out += c;
      }
      out += '"';
    } else {
      out += expanded;
    }
  }
  return out;
}

MountSpec parse_mount(std::string_view spec, const std::function<std::string(std::string_view)>& expand) {
  MountSpec mount;
  std::vector<std::string> fields = csv_fields(spec);
  if (expand) {
    for (std::string& field : fields) {
      std::size_t equals = field.find('=');
      if (equals != std::string::npos)
        field = field.substr(0, equals + 1) + expand(std::string_view(field).substr(equals + 1));
    }
  }
  // The type decides which keys are allowed, so it is read first wherever it is written.
  for (const std::string& field : fields) {
    std::string_view f = field;
    std::size_t equals = f.find('=');
    if (equals != std::string_view::npos && text::to_lower(text::trim_space(f.substr(0, equals))) == "type") {
      std::string type = text::to_lower(f.substr(equals + 1));
      if (type != "bind" && type != "cache" && type != "tmpfs" && type != "secret" && type != "ssh") {
        throw std::invalid_argument(fmt::format("unsupported mount type \"{}\"", f.substr(equals + 1)));
      }
      mount.type = type;
    }
  }
  bool access_given = false;
  for (const std::string& field : fields) {
    std::string_view f = text::trim_space(field);
    if (f.empty()) continue;
    std::size_t equals = f.find('=');
    std::string key = text::to_lower(f.substr(0, equals));
    std::string_view value = equals == std::string_view::npos ? std::string_view() : f.substr(equals + 1);
    bool has_value = equals != std::string_view::npos;
    if (!has_value) {
      // A bare key is a boolean flag.
      if (key == "readonly" || key == "ro") {
        mount.readonly = true;
        access_given = true;
      } else if (key == "readwrite" || key == "rw") {
        mount.readonly = false;
        access_given = true;
      } else if (key == "required") {
        mount.required = true;
      } else {
        throw std::invalid_argument(fmt::format("invalid field \"{}\": must be a key=value pair", f));
      }
      continue;
    }
    if (key == "type") {
      continue;
    } else if (key == "from") {
      mount.from = std::string(value);
    } else if (key == "source" || key == "src") {
      mount.source = std::string(value);
    } else if (key == "target" || key == "dst" || key == "destination") {
      mount.target = std::string(value);
    } else if (key == "readonly" || key == "ro") {
      mount.readonly = parse_bool_value(key, value);
      access_given = true;
    } else if (key == "readwrite" || key == "rw") {
      mount.readonly = !parse_bool_value(key, value);
      access_given = true;
    } else if (key == "required") {
      mount.required = parse_bool_value(key, value);
    } else if (key == "id") {
      mount.id = std::string(value);
    } else if (key == "sharing") {
      std::string sharing = text::to_lower(value);
      if (sharing != "shared" && sharing != "private" && sharing != "locked") {
        throw std::invalid_argument(
            fmt::format("unsupported sharing value \"{}\" (use shared, private or locked)", value));
      }
      mount.sharing = sharing;
    } else if (key == "mode") {
      std::optional<long long> mode = text::parse_integer(value, 8);
      if (!mode || *mode < 0 || *mode > 07777) {
        throw std::invalid_argument(fmt::format("invalid mode \"{}\" (want an octal number)", value));
      }
      mount.mode = static_cast<std::uint32_t>(*mode);
    } else if (key == "uid") {
      mount.uid = parse_integer(key, value);
    } else if (key == "gid") {
      mount.gid = parse_integer(key, value);
    } else if (key == "size") {
      mount.size = parse_size(value);
    } else if (key == "env") {
      mount.env = std::string(value);
    } else {
      throw std::invalid_argument(fmt::format("unexpected key \"{}\" in \"{}\"", key, f));
    }
  }
  // Cache mounts are writable and bind mounts read-only unless said otherwise, as in BuildKit.
  if (mount.type == "bind" && !access_given) mount.readonly = true;
  if ((mount.type == "tmpfs" || mount.type == "secret" || mount.type == "ssh") && !mount.from.empty()) {
    throw std::invalid_argument(fmt::format("\"from\" is not allowed for a {} mount", mount.type));
  }
  if (mount.type == "secret" && mount.id.empty() && mount.target.empty() && mount.env.empty()) {
    throw std::invalid_argument("a secret mount needs an id, a target or an env");
  }
  return mount;
}

}  // namespace kiln::parser

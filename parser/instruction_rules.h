// Docker's per-instruction rules: which flags each instruction accepts and of what type, how many
// arguments it takes, and the values its flags may have. Also the parsing of `RUN --mount` specs
// and of HEALTHCHECK durations, which the builder uses as well.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "parser/dockerfile.h"

namespace kiln::parser {

// Throws ParseError, pointing at the offending flag or argument, when `instruction` breaks a rule
// Docker enforces before building: an unknown or duplicated flag, a bool flag with a non-bool
// value, the wrong number of arguments, SHELL not in JSON form, a bad HEALTHCHECK duration.
void check_instruction(const Instruction& instruction, const Dockerfile& file);

// A parsed `RUN --mount=...` value (after variable expansion).
struct MountSpec {
  std::string type = "bind";  // bind, cache, tmpfs, secret, ssh
  std::string from;           // a stage or image, for bind and cache
  std::string source;
  std::string target;  // empty: the working directory, as BuildKit mounts it
  bool readonly = false;
  std::string id;
  std::string sharing = "shared";  // cache: shared, private, locked
  std::optional<std::uint32_t> mode;
  std::optional<std::int64_t> uid;
  std::optional<std::int64_t> gid;
  bool required = false;
  std::optional<std::int64_t> size;  // tmpfs, in bytes
  std::string env;                   // secret: also expose as this environment variable
};

// Go's encoding/csv reading of one record, as Docker reads --mount, --secret and --output: fields
// separated by commas, a field may be quoted with "…" and a doubled quote inside stands for one.
// Throws std::invalid_argument on a stray quote.
std::vector<std::string> csv_fields(std::string_view line);

// Parses a mount spec the way BuildKit does (comma-separated CSV fields, `key=value` or a bare
// boolean key); `expand`, when given, is applied to each field's value after the CSV split, so
// quoting for CSV and for variables do not interfere. Throws std::invalid_argument with a message
// naming the offending field; lets the expander's exceptions through.
MountSpec parse_mount(std::string_view spec, const std::function<std::string(std::string_view)>& expand = {});

// The spec written back with its values expanded, fields quoted for CSV where needed.
std::string expand_mount_spec(std::string_view spec,
                              const std::function<std::string(std::string_view)>& expand);

// Go's time.ParseDuration ("1m30s", "300ms", "1.5h"). nullopt when malformed.
std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text);

}  // namespace kiln::parser

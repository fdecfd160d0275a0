// Output formatting shared by the commands: Docker's table layout, its human durations and sizes,
// and the subset of Go templates that `--format` users reach for.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kiln::cli {

// Docker's tabwriter settings (minwidth 10, padding 3): every column but the last is padded to
// max(10, widest cell + 3).
std::string format_table(const std::vector<std::vector<std::string>>& rows);

// "2 hours ago", "About a minute ago", "3 weeks ago" (go-units HumanDuration + " ago").
std::string human_since(int64_t then_seconds, int64_t now_seconds);

// Docker's ellipsis: at most `width` characters, the last one "…" when cut.
std::string ellipsis(const std::string& s, size_t width);

// Renders a Go-template subset against a JSON value: {{.A.B}}, {{json .A}}, {{.}} and literal text,
// with \t and \n escapes. Throws UsageError on anything else, naming it.
std::string render_template(const std::string& tmpl, const nlohmann::json& value);

bool stdout_is_terminal();
bool stderr_is_terminal();

}  // namespace kiln::cli

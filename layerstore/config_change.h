// Applies Dockerfile-style instructions to an image config, as `docker import --change` and
// `docker commit --change` do: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

// Docker's word processing for the instructions it expands (ENV, LABEL, EXPOSE, USER, VOLUME,
// WORKDIR): `text` split into words at unquoted blanks, quotes removed and variables substituted
// from `env` (the config's Env as it stands before the change, "KEY=value" entries). It lives in the
// parser, which layerstore does not depend on: the command line passes it in.
using WordSplitter =
    std::function<std::vector<std::string>(std::string_view text, const std::vector<std::string>& env)>;

// `config` is the image config's "config" object (Env, Cmd, ...). Without `words`, quotes are removed
// but no variable is substituted. Throws UsageError naming the change and what is wrong with it.
void apply_config_change(nlohmann::json& config, std::string_view change, const WordSplitter& words = {});

}  // namespace kiln

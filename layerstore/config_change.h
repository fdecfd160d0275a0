// Applies Dockerfile-style instructions to an image config, as `docker import --change` and
// `docker commit --change` do: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR.
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

namespace kiln {

// `config` is the image config's "config" object (Env, Cmd, ...). Throws UsageError naming the
// change and what is wrong with it.
void apply_config_change(nlohmann::json& config, std::string_view change);

}  // namespace kiln

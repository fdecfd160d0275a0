// images, history, inspect, tag, rmi, prune, version: looking at and naming what is in the store.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <set>

#include "cli/context.h"
#include "cli/format.h"
#include "layerstore/errors.h"
#include "layerstore/files.h"
#include "parser/instruction_rules.h"
#include "registry/pull.h"
#include "runtime/cgroups.h"
#include "runtime/containers.h"

namespace kiln::cli {

using nlohmann::json;
using nlohmann::ordered_json;

namespace {

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t created_seconds(const std::string& created) {
  return parse_rfc3339_seconds(created).value_or(0);
}

std::string created_since(const std::string& created) {
  auto secs = parse_rfc3339_seconds(created);
  return secs ? human_since(*secs, now_seconds()) : "N/A";
}

// Docker's `image inspect` document for one image.
ordered_json inspect_json(const Store& store, const Image& img) {
  ordered_json j;
  j["Id"] = img.id().str();
  j["RepoTags"] = ordered_json::array();
  for (const auto& n : img.names) j["RepoTags"].push_back(n.familiar());
  j["RepoDigests"] = ordered_json::array();
  // Shown as Docker shows them (docker.io/library/ dropped).
  for (const Reference& ref : store.repo_digests(img.id())) j["RepoDigests"].push_back(ref.familiar());
  j["Parent"] = "";
  const auto history = img.config.history();
  j["Comment"] = history.empty() ? "" : history.back().comment;
  j["Created"] = img.config.created();
  j["DockerVersion"] = "";
  j["Author"] = img.config.author();
  j["Config"] = img.config.container_config();
  j["Architecture"] = img.config.architecture();
  if (img.config.doc().contains("variant")) j["Variant"] = img.config.doc()["variant"];
  j["Os"] = img.config.os();
  j["Size"] = store.image_size(img);
  ordered_json layers = ordered_json::array();
  for (const auto& d : img.config.diff_ids()) layers.push_back(d.str());
  j["RootFS"] = {{"Type", "layers"}, {"Layers", layers}};
  j["Metadata"] = {{"LastTagTime", "0001-01-01T00:00:00Z"}};
  j["Descriptor"] = img.manifest_descriptor.to_json();
  return j;
}

// docker rmi for one argument: a name is untagged (the image goes with its last name); an ID
// removes the image with all its names, which takes --force when there are several. Prints what it
// did and returns whether an image went.
bool remove_image_or_name(Store& store, const std::string& name, bool force,
                          const std::vector<runtime::ContainerRecord>& containers) {
  Image img = store.resolve(name);
  auto ref = Reference::try_parse(name);
  bool by_name = ref && std::find(img.names.begin(), img.names.end(), *ref) != img.names.end();
  // A container's root is the image's layers: while one exists the image stays, as in Docker;
  // only its references may go, and only when forced.
  auto user = std::find_if(containers.begin(), containers.end(),
                           [&](const runtime::ContainerRecord& c) { return c.image_id == img.id().str(); });
  auto reference_in_use = [&] {
    return Error(fmt::format(
        "conflict: unable to remove repository reference \"{}\" (must force) - container {} is using its "
        "referenced image {}",
        name, user->short_id(), img.id().short_id()));
  };
  // A repo digest ("busybox@sha256:…" as pulled) is a reference too: it goes, and the image with it
  // when nothing else names it.
  if (!by_name && ref && ref->digest()) {
    std::vector<Reference> repo_digests = store.repo_digests(img.id());
    auto same = [&](const Reference& d) {
      return d.repository() == ref->repository() && d.digest() == ref->digest();
    };
    if (std::any_of(repo_digests.begin(), repo_digests.end(), same)) {
      bool last = img.names.empty() && std::all_of(repo_digests.begin(), repo_digests.end(), same);
      if (last && user != containers.end() && !force) throw reference_in_use();
      store.remove_repo_digest(*ref);
      fmt::print("Untagged: {}@{}\n", ref->familiar_repository(), ref->digest()->str());
      if (!last || user != containers.end()) return false;
      store.remove_image(img.manifest_descriptor.digest);
      fmt::print("Deleted: {}\n", img.id().str());
      return true;
    }
  }
  bool last_name = !by_name || img.names.size() <= 1;
  if (user != containers.end() && last_name) {
    if (!force) {
      if (by_name) throw reference_in_use();
      throw Error(fmt::format(
          "conflict: unable to delete {} (must be forced) - image is being used by {} "
          "container {}",
          img.id().short_id(), user->state == "running" ? "running" : "stopped", user->short_id()));
    }
    for (const auto& n : img.names) {
      if (by_name && !(n == *ref)) continue;
      store.remove_name(n, /*keep_untagged=*/true);
      fmt::print("Untagged: {}\n", n.familiar());
    }
    return false;
  }
  if (by_name) {
    store.remove_name(*ref, false);
    fmt::print("Untagged: {}\n", ref->familiar());
    if (img.names.size() > 1) return false;
    fmt::print("Deleted: {}\n", img.id().str());
    return true;
  }
  if (img.names.size() > 1 && !force) {
    throw Error(
        fmt::format("conflict: unable to delete {} (must be forced) - image is referenced in "
                    "multiple repositories",
                    img.id().short_id()));
  }
  for (const auto& n : img.names) fmt::print("Untagged: {}\n", n.familiar());
  store.remove_image(img.manifest_descriptor.digest);
  fmt::print("Deleted: {}\n", img.id().str());
  return true;
}

}  // namespace

void add_image_commands(CLI::App& app, Context& ctx) {
  {
    auto* cmd = app.add_subcommand("images", "List images");
    cmd->alias("ls");
    auto quiet = std::make_shared<bool>(false);
    auto no_trunc = std::make_shared<bool>(false);
    auto digests = std::make_shared<bool>(false);
    auto all = std::make_shared<bool>(false);
    auto format = std::make_shared<std::string>();
    auto filter = std::make_shared<std::string>();
    cmd->add_flag("-q,--quiet", *quiet, "Only show image IDs");
    cmd->add_flag("--no-trunc", *no_trunc, "Don't truncate output");
    cmd->add_flag("--digests", *digests, "Show the digests registries know the images by");
    cmd->add_flag("-a,--all", *all, "Show all images (kiln keeps no intermediate images; same as default)");
    cmd->add_option("--format", *format, "Output format: table (default), json, or a Go template subset");
    cmd->add_option("repository", *filter, "Only images of this repository[:tag]")
        ->type_name("REPOSITORY[:TAG]");
    cmd->footer("Example: kiln images busybox");
    cmd->callback([&ctx, quiet, no_trunc, digests, format, filter] {
      Store store = ctx.open_store();
      auto images = store.images();
      std::sort(images.begin(), images.end(), [](const Image& a, const Image& b) {
        return created_seconds(a.config.created()) > created_seconds(b.config.created());
      });
      std::optional<Reference> want;
      bool want_tag = false;
      if (!filter->empty()) {
        want = Reference::parse(*filter);
        want_tag = filter->find(':', filter->rfind('/') == std::string::npos ? 0 : filter->rfind('/')) !=
                   std::string::npos;
      }
      struct Row {
        const Image* image;
        std::string repo, tag, digest;
      };
      std::vector<Row> rows;
      // An image ID is one image to Docker even when kiln holds it under two manifests (loaded
      // once with compressed and once with plain layers): its unnamed copy is not dangling, and
      // its repo digests are listed once.
      std::set<Digest> named_ids;
      for (const auto& img : images) {
        if (!img.names.empty()) named_ids.insert(img.id());
      }
      auto wanted = [&](const std::string& repository, const std::optional<std::string>& tag) {
        return !want || (repository == want->repository() && (!want_tag || tag == want->tag()));
      };
      struct RepoDigests {
        std::string familiar;
        std::vector<std::string> digests;
      };
      std::set<Digest> listed_ids;
      for (const auto& img : images) {
        if (img.names.empty() && named_ids.count(img.id())) continue;
        bool first_of_id = listed_ids.insert(img.id()).second;
        // Docker's rows: one per tag, with the repo digests of the tag's repository (one row each
        // under --digests); then one per repository known only by digest, tag <none>.
        std::map<std::string, RepoDigests> digests_by_repo;  // by repository
        if (first_of_id) {
          for (const Reference& d : store.repo_digests(img.id())) {
            RepoDigests& known = digests_by_repo[d.repository()];
            known.familiar = d.familiar_repository();
            known.digests.push_back(d.digest()->str());
          }
        }
        if (img.names.empty() && digests_by_repo.empty()) {
          if (!want && first_of_id) rows.push_back({&img, "<none>", "<none>", "<none>"});
          continue;
        }
        for (const auto& n : img.names) {
          std::vector<std::string> row_digests;
          if (auto it = digests_by_repo.find(n.repository()); it != digests_by_repo.end())
            row_digests = it->second.digests;
          if (!wanted(n.repository(), n.tag())) continue;
          if (!*digests || row_digests.empty()) row_digests = {"<none>"};
          for (const std::string& d : row_digests)
            rows.push_back({&img, n.familiar_repository(), n.tag().value_or("<none>"), d});
        }
        for (const auto& n : img.names) digests_by_repo.erase(n.repository());
        for (const auto& [repository, known] : digests_by_repo) {
          if (!wanted(repository, std::nullopt)) continue;
          if (!*digests) {
            rows.push_back({&img, known.familiar, "<none>", "<none>"});
            continue;
          }
          for (const std::string& d : known.digests) rows.push_back({&img, known.familiar, "<none>", d});
        }
      }
      if (*quiet) {
        std::vector<std::string> seen;
        for (const auto& r : rows) {
          std::string id = *no_trunc ? r.image->id().str() : r.image->id().short_id();
          if (std::find(seen.begin(), seen.end(), id) != seen.end()) continue;
          seen.push_back(id);
          fmt::print("{}\n", id);
        }
        return;
      }
      auto row_json = [&](const Row& r) {
        ordered_json j;
        j["Containers"] = "N/A";
        j["CreatedAt"] = r.image->config.created();
        j["CreatedSince"] = created_since(r.image->config.created());
        j["Digest"] = r.digest;
        j["ID"] = *no_trunc ? r.image->id().str() : r.image->id().short_id();
        j["Repository"] = r.repo;
        j["Size"] = human_size(store.image_size(*r.image));
        j["Tag"] = r.tag;
        return j;
      };
      if (*format == "json") {
        for (const auto& r : rows) fmt::print("{}\n", row_json(r).dump());
        return;
      }
      if (!format->empty() && *format != "table") {
        for (const auto& r : rows) fmt::print("{}\n", render_template(*format, json(row_json(r))));
        return;
      }
      std::vector<std::vector<std::string>> table;
      if (*digests) {
        table.push_back({"REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"});
      } else {
        table.push_back({"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"});
      }
      for (const auto& r : rows) {
        std::vector<std::string> line{r.repo, r.tag};
        if (*digests) line.push_back(r.digest);
        line.push_back(*no_trunc ? r.image->id().str() : r.image->id().short_id());
        line.push_back(created_since(r.image->config.created()));
        line.push_back(human_size(store.image_size(*r.image)));
        table.push_back(line);
      }
      fmt::print("{}", format_table(table));
    });
  }
  {
    auto* cmd = app.add_subcommand("history", "Show the history of an image");
    auto image = std::make_shared<std::string>();
    auto no_trunc = std::make_shared<bool>(false);
    auto quiet = std::make_shared<bool>(false);
    auto human = std::make_shared<bool>(true);
    auto format = std::make_shared<std::string>();
    cmd->add_option("image", *image, "Image")->required()->type_name("IMAGE");
    cmd->add_flag("--no-trunc", *no_trunc, "Don't truncate output");
    cmd->add_flag("-q,--quiet", *quiet, "Only show image IDs");
    cmd->add_option("-H,--human", *human, "Print sizes and dates in human readable format")
        ->default_str("true");
    cmd->add_option("--format", *format, "Output format: table (default), json, or a Go template subset");
    cmd->footer("Example: kiln history --no-trunc busybox");
    cmd->callback([&ctx, image, no_trunc, quiet, human, format] {
      Store store = ctx.open_store();
      Image img = store.resolve(*image);
      auto history = img.config.history();
      // Each non-empty history entry owns the next layer, in order.
      std::vector<int64_t> sizes(history.size(), 0);
      size_t layer = 0;
      for (size_t i = 0; i < history.size(); ++i) {
        if (history[i].empty_layer || layer >= img.manifest.layers.size()) continue;
        auto info = store.layer_info(img.manifest.layers[layer].digest);
        sizes[i] = static_cast<int64_t>(info ? info->uncompressed_size
                                             : static_cast<uint64_t>(img.manifest.layers[layer].size));
        ++layer;
      }
      std::vector<ordered_json> rows;
      for (size_t k = history.size(); k-- > 0;) {
        const auto& h = history[k];
        ordered_json j;
        std::string id =
            k + 1 == history.size() ? (*no_trunc ? img.id().str() : img.id().short_id()) : "<missing>";
        j["Comment"] = h.comment;
        j["CreatedAt"] = h.created;
        std::string by = h.created_by;
        j["CreatedBy"] = *no_trunc ? by : ellipsis(by, 45);
        j["CreatedSince"] = *human ? created_since(h.created) : h.created;
        j["ID"] = id;
        j["Size"] = *human ? human_size(static_cast<uint64_t>(sizes[k])) : std::to_string(sizes[k]);
        rows.push_back(j);
      }
      if (*quiet) {
        for (const auto& r : rows) fmt::print("{}\n", r["ID"].get<std::string>());
        return;
      }
      if (*format == "json") {
        for (const auto& r : rows) fmt::print("{}\n", r.dump());
        return;
      }
      if (!format->empty() && *format != "table") {
        for (const auto& r : rows) fmt::print("{}\n", render_template(*format, json(r)));
        return;
      }
      std::vector<std::vector<std::string>> table{{"IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"}};
      for (const auto& r : rows) {
        table.push_back({r["ID"], r["CreatedSince"], r["CreatedBy"], r["Size"], r["Comment"]});
      }
      fmt::print("{}", format_table(table));
    });
  }
  {
    auto* cmd = app.add_subcommand("inspect", "Show low-level information on images, as JSON");
    auto images = std::make_shared<std::vector<std::string>>();
    auto format = std::make_shared<std::string>();
    cmd->add_option("image", *images, "Images")->required()->type_name("IMAGE...");
    cmd->add_option("-f,--format", *format, "Format with a Go template subset ({{.Id}}, {{json .Config}})");
    cmd->footer("Example: kiln inspect --format '{{.Id}}' busybox");
    cmd->callback([&ctx, images, format] {
      Store store = ctx.open_store();
      ordered_json all = ordered_json::array();
      std::vector<std::string> missing;
      for (const auto& name : *images) {
        try {
          all.push_back(inspect_json(store, store.resolve(name)));
        } catch (const NotFoundError&) {
          missing.push_back(name);
        }
      }
      if (format->empty()) {
        fmt::print("{}\n", all.dump(4));
      } else {
        for (const auto& j : all) fmt::print("{}\n", render_template(*format, json(j)));
      }
      if (!missing.empty()) {
        std::string list;
        for (const auto& m : missing) list += (list.empty() ? "" : ", ") + ("`" + m + "`");
        throw NotFoundError(fmt::format("no such image: {}", list));
      }
    });
  }
  {
    auto* cmd = app.add_subcommand("tag", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE");
    auto source = std::make_shared<std::string>();
    auto target = std::make_shared<std::string>();
    cmd->add_option("source", *source, "Existing image")->required()->type_name("SOURCE_IMAGE[:TAG]");
    cmd->add_option("target", *target, "New name")->required()->type_name("TARGET_IMAGE[:TAG]");
    cmd->footer("Example: kiln tag busybox localhost:5000/busybox:1.36");
    cmd->callback([&ctx, source, target] {
      Reference ref = Reference::parse_tagged(*target);
      Store store = ctx.open_store();
      Image img = store.resolve(*source);
      store.set_name(img.manifest_descriptor, ref);
    });
  }
  {
    auto* cmd = app.add_subcommand("rmi", "Remove one or more images");
    auto images = std::make_shared<std::vector<std::string>>();
    auto force = std::make_shared<bool>(false);
    cmd->add_option("image", *images, "Images")->required()->type_name("IMAGE...");
    cmd->add_flag("-f,--force", *force, "Remove an image by ID even if several names refer to it");
    cmd->footer("Example: kiln rmi busybox:latest");
    cmd->callback([&ctx, images, force] {
      std::string failures;
      bool deleted_any = false;
      {
        Store store = ctx.open_store();
        std::vector<runtime::ContainerRecord> containers = runtime::ContainerStore(ctx.root()).list();
        for (const auto& name : *images) {
          try {
            deleted_any |= remove_image_or_name(store, name, *force, containers);
          } catch (const Error& e) {
            failures += (failures.empty() ? "" : "\nkiln: error: ") + std::string(e.what());
          }
        }
      }
      // Like docker rmi, free the space at once: blobs and snapshots no image needs any more go now.
      // If another kiln process has the store open, they stay for the next rmi or prune rather
      // than make this command wait behind a long push or build.
      if (deleted_any) {
        if (auto exclusive = Store::try_open_exclusive(ctx.root())) {
          exclusive->prune();
          registry::forget_missing_blobs(*exclusive);
        }
      }
      if (!failures.empty()) throw Error(failures);
    });
  }
  {
    auto* cmd = app.add_subcommand("prune", "Remove unreferenced blobs and unused layer snapshots");
    auto force = std::make_shared<bool>(false);
    auto build_cache = std::make_shared<bool>(false);
    auto keep_storage = std::make_shared<std::string>();
    auto filters = std::make_shared<std::vector<std::string>>();
    cmd->add_flag("-f,--force", *force, "Accepted for Docker compatibility; kiln never prompts");
    cmd->add_flag("--build-cache", *build_cache,
                  "Also remove the build cache (all of it, unless limited below)");
    cmd->add_option("--keep-storage", *keep_storage,
                    "With --build-cache: keep the most recently used up to this size")
        ->type_name("SIZE");
    cmd->add_option("--filter", *filters,
                    "With --build-cache: until=DURATION keeps what was used more recently")
        ->allow_extra_args(false);
    cmd->footer("Example: kiln prune --build-cache --keep-storage 5GB");
    cmd->callback([&ctx, build_cache, keep_storage, filters] {
      Store store = ctx.open_store(Store::Access::Exclusive);
      if (!*build_cache && (!keep_storage->empty() || !filters->empty())) {
        throw UsageError("--keep-storage and --filter apply to --build-cache");
      }
      if (*build_cache) {
        std::optional<uint64_t> keep;
        if (!keep_storage->empty()) {
          try {
            keep = static_cast<uint64_t>(runtime::parse_memory_size(*keep_storage));
          } catch (const UsageError&) {
            rethrow_with_context(fmt::format("--keep-storage `{}`", *keep_storage));
          }
        }
        std::optional<int64_t> max_age;
        for (const std::string& filter : *filters) {
          if (!filter.starts_with("until="))
            throw UsageError(fmt::format("--filter `{}`: kiln knows until=DURATION", filter));
          auto duration = parser::parse_duration(filter.substr(6));
          if (!duration) throw UsageError(fmt::format("--filter `{}`: not a duration (like 24h)", filter));
          max_age = std::chrono::duration_cast<std::chrono::seconds>(*duration).count();
        }
        // Without limits, everything goes.
        if (!keep && !max_age) keep = 0;
        Store::CachePruneReport cache = store.prune_build_cache(max_age, keep);
        fmt::print("Deleted build cache records: {}\n", cache.removed_records);
        fmt::print(
            "Deleted build cache side files (step inputs, context checksums, download validators): {}\n",
            cache.removed_side_files);
      }
      PruneReport r = store.prune();
      registry::forget_missing_blobs(store);
      for (const auto& d : r.deleted_blobs) fmt::print("Deleted blob: {}\n", d.str());
      for (const auto& d : r.deleted_snapshots) fmt::print("Deleted snapshot: {}\n", d.str());
      fmt::print("Total reclaimed space: {}\n", human_size(r.reclaimed_bytes));
    });
  }
  {
    auto* cmd = app.add_subcommand("version", "Show the kiln version");
    cmd->callback([&ctx] {
      fmt::print("kiln version {}\n", KILN_VERSION);
      fmt::print(" Store:       {}\n", ctx.root());
      fmt::print(" OS/Arch:     linux/{}\n", host_architecture());
    });
  }
}

}  // namespace kiln::cli

#include "layerstore/image.h"

#include <catch2/catch.hpp>

#include "layerstore/config_change.h"
#include "layerstore/errors.h"

using nlohmann::json;

TEST_CASE("manifests round-trip and are validated", "[image]") {
  const std::string cfg = "sha256:" + std::string(64, '1');
  const std::string layer = "sha256:" + std::string(64, '2');
  std::string text = R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
    "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":")" +
                     cfg + R"(","size":7},
    "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":")" +
                     layer + R"(","size":9}]})";
  kiln::Manifest m = kiln::Manifest::parse(text);
  CHECK(m.media_type == kiln::media::kDockerManifest);
  CHECK(m.config.digest.str() == cfg);
  REQUIRE(m.layers.size() == 1);
  CHECK(m.layers[0].size == 9);
  CHECK(kiln::Manifest::parse(m.serialize()).serialize() == m.serialize());

  CHECK_THROWS_WITH(kiln::Manifest::parse("{"), Catch::StartsWith("manifest: invalid JSON"));
  CHECK_THROWS_WITH(kiln::Manifest::parse(R"({"schemaVersion":1})"), "manifest: schemaVersion is not 2");
  CHECK_THROWS_WITH(
      kiln::Manifest::parse(R"({"schemaVersion":2,"config":{"digest":"sha256:x","size":1},"layers":[]})"),
      "invalid descriptor digest `sha256:x`");
  CHECK_THROWS_WITH(kiln::Manifest::parse(R"({"schemaVersion":2,"config":{"digest":")" + cfg +
                                          R"(","size":-1},"layers":[]})"),
                    Catch::Contains("invalid `size`"));
  CHECK_THROWS_AS(kiln::Manifest::parse(std::string(5 << 20, ' ')), kiln::InvalidInputError);
}

TEST_CASE("chain IDs follow the image spec", "[image]") {
  auto a = *kiln::Digest::parse("sha256:" + std::string(64, 'a'));
  auto b = *kiln::Digest::parse("sha256:" + std::string(64, 'b'));
  auto chains = kiln::chain_ids({a, b});
  REQUIRE(chains.size() == 2);
  CHECK(chains[0] == a);
  CHECK(chains[1] == kiln::sha256_of(a.str() + " " + b.str()));
}

TEST_CASE("image configs expose diff IDs and history", "[image]") {
  auto c =
      kiln::ImageConfig::parse(R"({"architecture":"amd64","os":"linux","created":"2024-01-02T03:04:05.5Z",
    "rootfs":{"type":"layers","diff_ids":["sha256:)" +
                               std::string(64, 'c') + R"("]},
    "history":[{"created_by":"a","empty_layer":true},{"created_by":"b","comment":"c"}]})");
  CHECK(c.diff_ids().size() == 1);
  REQUIRE(c.history().size() == 2);
  CHECK(c.history()[0].empty_layer);
  CHECK(c.history()[1].comment == "c");
  CHECK(kiln::parse_rfc3339_seconds(c.created()) == 1704164645);
  CHECK(kiln::parse_rfc3339_seconds("2024-01-02T05:04:05+02:00") == 1704164645);
  CHECK(kiln::rfc3339_nano(1704164645500000000) == "2024-01-02T03:04:05.5Z");
  CHECK_THROWS_AS(kiln::ImageConfig::parse(R"({"rootfs":{"diff_ids":["nope"]}})"), kiln::InvalidInputError);
}

TEST_CASE("config changes (--change) edit the config as Docker does", "[image]") {
  json cfg = json::object();
  kiln::apply_config_change(cfg, R"(CMD ["/bin/sh", "-c", "echo"])");
  kiln::apply_config_change(cfg, "entrypoint /start --now");
  kiln::apply_config_change(cfg, R"(ENV PATH=/bin GREETING="hello world")");
  kiln::apply_config_change(cfg, "ENV LEGACY value with spaces");
  kiln::apply_config_change(cfg, "ENV PATH=/usr/bin");
  kiln::apply_config_change(cfg, "EXPOSE 80 443/TCP 1000-1002/udp");
  kiln::apply_config_change(cfg, "LABEL a=b 'c d'=e");
  kiln::apply_config_change(cfg, "USER 1000:1000");
  kiln::apply_config_change(cfg, R"(VOLUME ["/a", "/b"])");
  kiln::apply_config_change(cfg, "WORKDIR /srv");
  kiln::apply_config_change(cfg, "WORKDIR app/../data");
  CHECK(cfg["Cmd"] == json({"/bin/sh", "-c", "echo"}));
  CHECK(cfg["Entrypoint"] == json({"/bin/sh", "-c", "/start --now"}));
  CHECK(cfg["Env"] == json({"PATH=/usr/bin", "GREETING=hello world", "LEGACY=value with spaces"}));
  CHECK(cfg["ExposedPorts"].size() == 5);
  CHECK(cfg["ExposedPorts"].contains("443/tcp"));
  CHECK(cfg["ExposedPorts"].contains("1001/udp"));
  CHECK(cfg["Labels"] == json({{"a", "b"}, {"c d", "e"}}));
  CHECK(cfg["User"] == "1000:1000");
  CHECK(cfg["Volumes"] == json({{"/a", json::object()}, {"/b", json::object()}}));
  CHECK(cfg["WorkingDir"] == "/srv/data");
  // Invalid JSON falls back to the shell form, as Docker does.
  kiln::apply_config_change(cfg, R"(CMD ["unterminated)");
  CHECK(cfg["Cmd"] == json({"/bin/sh", "-c", R"(["unterminated)"}));

  CHECK_THROWS_WITH(kiln::apply_config_change(cfg, "RUN x"), Catch::Contains("RUN is not allowed here"));
  CHECK_THROWS_WITH(kiln::apply_config_change(cfg, "EXPOSE 70000"), Catch::Contains("invalid port `70000`"));
  CHECK_THROWS_WITH(kiln::apply_config_change(cfg, "EXPOSE 80/icmp"), Catch::Contains("invalid protocol"));
  CHECK_THROWS_WITH(kiln::apply_config_change(cfg, "ENV"), Catch::Contains("requires arguments"));
  CHECK_THROWS_WITH(kiln::apply_config_change(cfg, "LABEL a=\"b"), Catch::Contains("unterminated quote"));
}

TEST_CASE("Docker manifest lists and OCI indexes round-trip with their platforms", "[image]") {
  const std::string amd = "sha256:" + std::string(64, 'a');
  const std::string arm = "sha256:" + std::string(64, 'b');
  std::string text =
      R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
    "manifests":[
      {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":")" +
      amd + R"(","size":528,"platform":{"architecture":"amd64","os":"linux"}},
      {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":")" +
      arm + R"(","size":529,"platform":{"architecture":"arm","os":"linux","variant":"v7"}}]})";
  kiln::Index list = kiln::Index::parse(text);
  CHECK(list.media_type == kiln::media::kDockerManifestList);
  CHECK(kiln::is_index_media_type(list.media_type));
  REQUIRE(list.manifests.size() == 2);
  REQUIRE(list.manifests[1].platform.has_value());
  CHECK(list.manifests[1].platform->architecture == "arm");
  CHECK(list.manifests[1].platform->variant == "v7");
  CHECK(list.manifests[0].size == 528);

  // What kiln writes reads back the same, media types and platforms included.
  kiln::Index again = kiln::Index::parse(list.serialize());
  CHECK(again.serialize() == list.serialize());
  auto written = nlohmann::json::parse(list.serialize());
  CHECK(written["schemaVersion"] == 2);
  CHECK(written["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json");
  CHECK(written["manifests"][1]["platform"]["variant"] == "v7");

  kiln::Index oci{std::string(kiln::media::kOciIndex), list.manifests, {{"org.example", "x"}}};
  auto oci_json = nlohmann::json::parse(oci.serialize());
  CHECK(oci_json["mediaType"] == "application/vnd.oci.image.index.v1+json");
  CHECK(oci_json["annotations"]["org.example"] == "x");
  CHECK(kiln::Index::parse(oci.serialize()).manifests.size() == 2);
  CHECK_THROWS_AS(kiln::Index::parse(R"({"schemaVersion":2,"manifests":[{"digest":"md5:x"}]})"),
                  kiln::InvalidInputError);
}

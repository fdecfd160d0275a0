#!/usr/bin/env bash
# history of an image built in several steps: newest first, the ID on the top row and <missing>
# below (as Docker shows images it did not build itself), 0B for steps without a layer, CREATED BY
# cut at 45 characters unless --no-trunc, and --format json with Docker's keys.
source "$(dirname "$0")/lib.sh"
need jq sha256sum

make_busybox_tar "$WORK/base.tar"
d=$WORK/archive && mkdir -p "$d"
b=$(sha256sum "$WORK/base.tar" | cut -d' ' -f1)
cp "$WORK/base.tar" "$d/$b.tar"
long_step='RUN /bin/sh -c apt-get update && apt-get install -y --no-install-recommends ca-certificates # buildkit'
jq -n --arg b "sha256:$b" --arg long "$long_step" '{
  architecture: "amd64", os: "linux", created: "2024-01-02T00:00:00Z", config: {Cmd: ["/bin/sh"]},
  rootfs: {type: "layers", diff_ids: [$b, $b]},
  history: [
    {created: "2024-01-01T00:00:00Z", created_by: "/bin/sh -c #(nop) ADD file:abc in / "},
    {created: "2024-01-01T00:00:01Z", created_by: "/bin/sh -c #(nop)  CMD [\"sh\"]", empty_layer: true},
    {created: "2024-01-02T00:00:00Z", created_by: $long, comment: "buildkit.dockerfile.v0"}]}' >"$d/config.json"
printf '[{"Config":"config.json","RepoTags":["hist:1"],"Layers":["%s.tar","%s.tar"]}]' "$b" "$b" >"$d/manifest.json"
tar -C "$d" -cf "$WORK/hist.tar" manifest.json config.json "$b.tar"
kiln load -i "$WORK/hist.tar" >/dev/null
id=$(kiln inspect --format '{{.Id}}' hist:1)

assert_eq "$(kiln history --format '{{.ID}}' hist:1 | tr '\n' ' ')" "${id:7:12} <missing> <missing> " "IMAGE column"
assert_eq "$(kiln history --format '{{.Size}}' hist:1 | sed -n 2p)" "0B" "an empty layer's size"
assert_eq "$(kiln history --format '{{.Size}}' hist:1 | sed -n 3p)" "$(kiln history --format '{{.Size}}' hist:1 | sed -n 1p)" \
  "both layers are the same tar"
assert_contains "$(kiln history --format '{{.Size}}' hist:1 | sed -n 1p)" "MB" "sizes in Docker's units"
row=$(kiln history hist:1 | sed -n 2p)
assert_contains "$row" "${long_step:0:44}…" "CREATED BY is cut at 45 characters"
assert_contains "$(kiln history --no-trunc hist:1 | sed -n 2p)" "$long_step" "--no-trunc keeps it whole"
assert_contains "$(kiln history hist:1 | sed -n 2p)" "buildkit.dockerfile.v0" "COMMENT column"
json=$(kiln history --format json hist:1)
assert_eq "$(wc -l <<<"$json")" 3 "one JSON object per step"
assert_eq "$(head -1 <<<"$json" | jq -r 'keys | join(",")')" "Comment,CreatedAt,CreatedBy,CreatedSince,ID,Size" "Docker's keys"
assert_eq "$(sed -n 2p <<<"$json" | jq -r .CreatedBy)" '/bin/sh -c #(nop)  CMD ["sh"]' "CreatedBy in JSON"
assert_eq "$(kiln history -q hist:1 | wc -l)" 3 "-q prints one line per step"
echo ok

#!/usr/bin/env bash
# import (tar, tar.gz, tar.zst, stdin, --change, --message), images, history, inspect, tag, rmi.
source "$(dirname "$0")/lib.sh"
need zstd gzip jq

make_busybox_tar "$WORK/bb.tar"
gzip -k "$WORK/bb.tar"
zstd -q -k "$WORK/bb.tar"

id=$(kiln import -c 'CMD ["/bin/sh"]' -c 'ENV A=1 B="two words"' -c 'EXPOSE 8080/tcp 53/udp' \
  -c 'LABEL org.example=yes' -c 'USER nobody' -c 'VOLUME /data' -c 'WORKDIR /srv' -c 'ENTRYPOINT echo hi' \
  -m "first import" "$WORK/bb.tar" busybox:plain)
[[ $id =~ ^sha256:[0-9a-f]{64}$ ]] || fail "import printed [$id], not an image ID"

# The image is what --change said.
cfg=$(kiln inspect busybox:plain)
assert_eq "$(jq -r '.[0].Id' <<<"$cfg")" "$id" "inspect Id"
assert_eq "$(jq -c '.[0].Config.Cmd' <<<"$cfg")" '["/bin/sh"]' "Cmd"
assert_eq "$(jq -c '.[0].Config.Entrypoint' <<<"$cfg")" '["/bin/sh","-c","echo hi"]' "shell-form Entrypoint"
assert_eq "$(jq -c '.[0].Config.Env' <<<"$cfg")" '["A=1","B=two words"]' "Env"
assert_eq "$(jq -c '.[0].Config.ExposedPorts' <<<"$cfg")" '{"53/udp":{},"8080/tcp":{}}' "ExposedPorts"
assert_eq "$(jq -r '.[0].Config.Labels["org.example"]' <<<"$cfg")" yes "Labels"
assert_eq "$(jq -r '.[0].Config.User' <<<"$cfg")" nobody "User"
assert_eq "$(jq -c '.[0].Config.Volumes' <<<"$cfg")" '{"/data":{}}' "Volumes"
assert_eq "$(jq -r '.[0].Config.WorkingDir' <<<"$cfg")" /srv "WorkingDir"
assert_eq "$(jq -r '.[0].Comment' <<<"$cfg")" "first import" "Comment"
assert_eq "$(jq -r '.[0].RepoTags[0]' <<<"$cfg")" "busybox:plain" "RepoTags"
assert_eq "$(jq -r '.[0].RootFS.Layers[0]' <<<"$cfg")" "sha256:$(sha256sum "$WORK/bb.tar" | cut -d' ' -f1)" \
  "diff ID is the sha256 of the uncompressed tar"
assert_eq "$(kiln inspect --format '{{.Id}} {{json .Config.Cmd}}' busybox:plain)" "$id [\"/bin/sh\"]" "inspect --format"

# Compressed and stdin inputs give the same layer (same diff ID); gzip input is kept as it came.
kiln import "$WORK/bb.tar.gz" busybox:gz >/dev/null
kiln import - busybox:zst <"$WORK/bb.tar.zst" >/dev/null
for t in gz zst; do
  assert_eq "$(kiln inspect --format '{{json .RootFS.Layers}}' busybox:$t)" \
    "$(kiln inspect --format '{{json .RootFS.Layers}}' busybox:plain)" "diff IDs of the $t import"
done
gz_layer=$(jq -r '.layers[0].digest' "$KILN_ROOT/oci/blobs/sha256/$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="docker.io/library/busybox:gz") | .digest' "$KILN_ROOT/oci/index.json" | cut -d: -f2)")
assert_eq "$gz_layer" "sha256:$(sha256sum "$WORK/bb.tar.gz" | cut -d' ' -f1)" "gzip input stored verbatim"
assert_eq "$(kiln history --format '{{.Comment}}' busybox:zst)" "Imported from -" "history comment from stdin"

# images: Docker's columns, one row per name, familiar names.
out=$(kiln images)
assert_eq "$(head -1 <<<"$out" | tr -s ' ')" "REPOSITORY TAG IMAGE ID CREATED SIZE" "images header"
assert_eq "$(grep -c '^busybox ' <<<"$out")" 3 "three busybox rows"
row=$(grep ' plain ' <<<"$out")
assert_contains "$row" "${id:7:12}" "short ID in images"
# Docker's wording for a fresh image: "Less than a second ago", "1 second ago", "N seconds ago".
[[ $row =~ (Less\ than\ a\ second|[0-9]+\ seconds?)\ ago ]] || fail "CREATED column: [$row]"
size=$(jq -r '.[0].Size' <<<"$cfg")
[[ $size -ge $(stat -c %s /bin/busybox) ]] || fail "image size $size smaller than busybox itself"
assert_eq "$(kiln images -q busybox:plain)" "${id:7:12}" "images -q with a filter"
assert_eq "$(kiln images --format json busybox:plain | jq -r .Tag)" plain "images --format json"

# history: Docker's columns; IMAGE is the ID on the top row.
h=$(kiln history busybox:plain)
assert_eq "$(head -1 <<<"$h" | tr -s ' ')" "IMAGE CREATED CREATED BY SIZE COMMENT" "history header"
assert_contains "$(sed -n 2p <<<"$h")" "${id:7:12}" "history IMAGE column"
assert_contains "$(sed -n 2p <<<"$h")" "first import" "history COMMENT column"
assert_eq "$(kiln history --no-trunc -q busybox:plain)" "$id" "history -q --no-trunc"

# tag and rmi, by name and by ID; the ID prefix resolves.
kiln tag busybox:plain localhost:5000/team/bb:v1
assert_eq "$(kiln images --format '{{.Repository}}:{{.Tag}}' localhost:5000/team/bb)" "localhost:5000/team/bb:v1" "tag"
assert_eq "$(kiln inspect --format '{{.Id}}' "${id:7:10}")" "$id" "ID prefix resolves"
expect_fail 1 "must be forced" kiln rmi "${id:7:12}"
out=$(kiln rmi localhost:5000/team/bb:v1)
assert_eq "$out" "Untagged: localhost:5000/team/bb:v1" "rmi of one of two names only untags"
out=$(kiln rmi busybox:plain)
assert_contains "$out" "Deleted: $id" "rmi of the last name deletes"
expect_fail 1 "no such image: \`busybox:plain\`" kiln inspect busybox:plain

# Moving a tag leaves the old image as <none>, as Docker does.
old=$(kiln inspect --format '{{.Id}}' busybox:gz)
kiln tag busybox:zst busybox:gz
kiln import -m other "$WORK/bb.tar" busybox:gz >/dev/null
assert_contains "$(kiln images)" "<none>" "an image that lost its last tag shows as <none>"

# --change expands variables as Docker does, from the Env the config has before each change.
kiln import -c 'ENV BASE=/opt' -c 'ENV PATH=$BASE/bin:/usr/bin X="a b"' -c 'WORKDIR $BASE/app' \
  -c 'LABEL v=${BASE:-none} w=${UNSET:-fallback}' -c 'CMD echo $BASE' "$WORK/bb.tar" expanded:1 >/dev/null
assert_eq "$(kiln inspect --format '{{json .Config}}' expanded:1)" \
  '{"Cmd":["/bin/sh","-c","echo $BASE"],"Env":["BASE=/opt","PATH=/opt/bin:/usr/bin","X=a b"],"Labels":{"v":"/opt","w":"fallback"},"WorkingDir":"/opt/app"}' \
  "--change expansion (CMD keeps its text, as Docker's does)"
echo "ok"

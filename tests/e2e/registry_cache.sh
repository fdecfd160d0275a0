#!/usr/bin/env bash
# The build cache shared through a registry: a build exports its steps with --cache-to; a second
# store (another CI machine) builds the same Dockerfile with --cache-from and runs no RUN step:
# every step comes from the registry, and only the layers it needs are downloaded. mode=min leaves
# out the stages the final image does not build on; mode=max keeps them.
source "$(dirname "$0")/lib.sh"
need docker-registry skopeo jq python3 openssl
source "$KILN_SOURCE_DIR/tests/registry_env/lib.sh"

registry_start plain
R=$REGISTRY_ADDR
make_busybox_tar "$WORK/bb.tar"
kiln import -c 'CMD ["/bin/sh"]' "$WORK/bb.tar" "$R/base/bb:v1" >/dev/null
kiln push -q "$R/base/bb:v1"

ctx=$WORK/ctx
mkdir -p "$ctx"
echo "from the context" >"$ctx/input.txt"
cat >"$ctx/Dockerfile" <<EOF
FROM $R/base/bb:v1 AS tools
RUN head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > /tool-random

FROM $R/base/bb:v1
COPY input.txt /input.txt
COPY --from=tools /tool-random /tool-random
RUN head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > /random
RUN echo second > /second
ENV DONE=1
EOF

# Machine 1: builds, exports (min), and also exports every stage (max) to another tag.
export KILN_ROOT=$WORK/store1
kiln build --progress plain -t first --cache-to "type=registry,ref=$R/cache/app:min" \
  --cache-to "type=registry,ref=$R/cache/app:max,mode=max" "$ctx" >"$WORK/out1" 2>&1 || fail "build 1: $(cat "$WORK/out1")"
assert_contains "$(cat "$WORK/out1")" "exporting cache to $R/cache/app:min" "cache export"
random1=$(kiln run --rm first cat /random)
# The cache is an OCI manifest whose config says what it is; skopeo reads it.
raw=$(skopeo inspect --tls-verify=false --raw "docker://$R/cache/app:min")
assert_eq "$(jq -r .config.mediaType <<<"$raw")" "application/vnd.kiln.build-cache.v1+json" "cache config type"

# The RUN vertices of a plain progress log that ran instead of coming from a cache.
runs_that_ran() {
  local n
  for n in $(grep -o '^#[0-9]* \[[^]]*\] RUN' "$1" | cut -d' ' -f1 | sort -u); do
    grep -q "^$n CACHED" "$1" || echo "$n"
  done
}

# Machine 2: a fresh store, the mode=max cache. Every step comes from the registry cache: no RUN
# runs (the random files are the first build's), and the image is the same.
export KILN_ROOT=$WORK/store2
kiln build --progress plain -t second --cache-from "type=registry,ref=$R/cache/app:max" "$ctx" >"$WORK/out2" 2>&1 ||
  fail "build 2: $(cat "$WORK/out2")"
out=$(cat "$WORK/out2")
assert_contains "$out" "importing cache manifest from $R/cache/app:max" "cache import"
assert_eq "$(runs_that_ran "$WORK/out2")" "" "RUN steps that ran with the whole cache at hand"
layers=$(skopeo inspect --tls-verify=false --raw "docker://$R/cache/app:max" | jq '.layers | length')
assert_eq "$(grep -c 'downloaded sha256:' <<<"$out")" "$layers" "each layer of the cache downloaded once"
assert_eq "$(kiln run --rm second cat /random)" "$random1" "the RUN's result came from the cache"
assert_eq "$(kiln inspect --format '{{json .RootFS.Layers}}' second)" \
  "$(KILN_ROOT=$WORK/store1 kiln inspect --format '{{json .RootFS.Layers}}' first)" "same layers"

# mode=min has the final stage's steps but not those of the stage it copies from: that stage's
# RUN runs again, and what depends on its result (kiln's COPY --from keys are by content) too.
export KILN_ROOT=$WORK/store3
kiln build --progress plain --cache-from "type=registry,ref=$R/cache/app:min" "$ctx" >"$WORK/out3" 2>&1 ||
  fail "build 3: $(cat "$WORK/out3")"
assert_contains "$(grep -A2 'COPY input.txt' "$WORK/out3")" "downloaded sha256:" "mode=min has the final stage's COPY"
[[ -n $(runs_that_ran "$WORK/out3") ]] || fail "mode=min held the tools stage's RUN"

# A cache reference with nothing there yet: a note, and the build goes on.
export KILN_ROOT=$WORK/store4
kiln build --progress plain --cache-from "type=registry,ref=$R/cache/none:x" "$ctx" >"$WORK/out5" 2>&1 ||
  fail "a missing cache failed the build: $(cat "$WORK/out5")"
assert_contains "$(cat "$WORK/out5")" "no cache there yet" "missing cache"
expect_fail 125 "type=local is not supported" kiln build --cache-to type=local,dest=x "$ctx"
echo "ok"

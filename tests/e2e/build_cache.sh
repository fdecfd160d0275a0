#!/usr/bin/env bash
# The build cache: a step runs again only when one of its inputs changed, the steps after it with
# it, and --progress plain says for each miss which input changed. Touching a file without changing
# it, or changing a LABEL, runs nothing again. --no-cache and --no-cache-filter, and the cache as a
# prune root that `kiln prune --build-cache` empties.
source "$(dirname "$0")/lib.sh"
need_root_sandbox

busybox_image busybox:latest
ctx=$WORK/ctx
mkdir -p "$ctx/src"
echo one >"$ctx/src/a.txt"
echo two >"$ctx/src/b.txt"
cat >"$ctx/Dockerfile" <<'EOF'
FROM busybox AS base
ARG VERSION=1
COPY src/ /src/
RUN echo "built $VERSION" > /built && cat /src/*.txt > /all
LABEL stage=base

FROM base AS final
RUN echo final > /final
EOF

build() { kiln build --progress plain -t cached:1 "$@" "$ctx" >"$WORK/out" 2>"$WORK/progress" || fail "build failed: $(cat "$WORK/progress")"; }
misses() { grep -o 'cache miss: .*' "$WORK/progress" || true; }
ran() { grep -cE '^#[0-9]+ DONE' "$WORK/progress" || true; }

build
first=$(tail -n1 "$WORK/out")
assert_eq "$(misses)" "" "a first build has nothing to explain"

build
assert_eq "$(tail -n1 "$WORK/out")" "$first" "same inputs, same image"
assert_eq "$(grep -c CACHED "$WORK/progress")" "4" "FROM, COPY and both RUNs from the cache"

# A file's content: the COPY and everything after it.
echo ONE >"$ctx/src/a.txt"
build
assert_eq "$(misses)" "$(printf '%s\n' 'cache miss: COPY src/ /src/ — src/a.txt changed' \
  'cache miss: RUN echo "built 1" > /built && cat /src/*.txt > /all — an earlier step changed' \
  'cache miss: RUN echo final > /final — an earlier step changed')" "a changed file"
assert_eq "$(kiln run --rm cached:1 cat /all)" "$(printf 'ONE\ntwo')" "the new content is in the image"

# A new file, then a removed one.
echo three >"$ctx/src/c.txt"
build
assert_contains "$(misses)" "COPY src/ /src/ — src/c.txt added" "an added file"
rm "$ctx/src/b.txt"
build
assert_contains "$(misses)" "COPY src/ /src/ — src/b.txt removed" "a removed file"

# mtime alone is not content: nothing runs.
touch -d '2001-01-01' "$ctx/src/a.txt"
build
assert_eq "$(misses)" "" "a touched file is not a change"
assert_eq "$(grep -c CACHED "$WORK/progress")" "4" "everything from the cache after touch"

# A build arg the RUN sees.
build --build-arg VERSION=2
assert_contains "$(misses)" 'cache miss: RUN echo "built 2" > /built && cat /src/*.txt > /all — build arg VERSION changed' "a build arg"
assert_eq "$(kiln run --rm cached:1 cat /built)" "built 2" "the build arg reached RUN"
assert_eq "$(kiln inspect --format '{{json .Config.Env}}' cached:1 | grep -c VERSION)" "0" "build args are not stored"

# A LABEL is not an input of the RUN after it (BuildKit: config changes do not invalidate).
sed -i 's/LABEL stage=base/LABEL stage=changed/' "$ctx/Dockerfile"
build --build-arg VERSION=2
assert_eq "$(misses)" "" "a LABEL change runs nothing"
assert_eq "$(kiln inspect --format '{{json .Config.Labels}}' cached:1)" '{"stage":"changed"}' "the label is new"

# The command itself.
sed -i 's/echo final/echo FINAL/' "$ctx/Dockerfile"
build --build-arg VERSION=2
assert_eq "$(misses)" "cache miss: RUN echo FINAL > /final — the command changed" "a changed command"

# --no-cache runs every step; --no-cache-filter only the named stage's.
build --build-arg VERSION=2 --no-cache
assert_eq "$(grep -c 'cache miss: .* — --no-cache$' "$WORK/progress")" "3" "--no-cache"
build --build-arg VERSION=2 --no-cache-filter final
assert_eq "$(misses)" "cache miss: RUN echo FINAL > /final — --no-cache-filter" "--no-cache-filter"

# The cache survives prune (its records are roots), and goes with prune --build-cache.
kiln rmi cached:1 >/dev/null
kiln prune >/dev/null
build --build-arg VERSION=2
assert_eq "$(ran)" "2" "after prune only the definition and the export ran"
side_files() { find "$KILN_ROOT/cache/lineage" "$KILN_ROOT/cache/checksums" -type f 2>/dev/null | wc -l; }
[[ $(side_files) -gt 0 ]] || fail "builds keep step inputs and context checksums"
kiln prune --build-cache --filter until=1h >"$WORK/pruned"
assert_contains "$(cat "$WORK/pruned")" "side files (step inputs, context checksums, download validators): 0" \
  "prune --filter until= leaves what was used within the hour"
before=$(side_files)
touch -d '3 hours ago' "$(find "$KILN_ROOT/cache/lineage" -type f | head -1)"
kiln prune --build-cache --filter until=1h >"$WORK/pruned"
assert_contains "$(cat "$WORK/pruned")" "download validators): 1" "prune --filter until= takes what is older"
assert_eq "$(side_files)" "$((before - 1))" "the older side file is gone, the rest stays"
kiln prune --build-cache >"$WORK/pruned"
assert_contains "$(cat "$WORK/pruned")" "build cache records" "prune --build-cache reports"
assert_eq "$(side_files)" "0" "prune --build-cache takes the step inputs and context checksums too"
build --build-arg VERSION=2
assert_eq "$(grep -c CACHED "$WORK/progress")" "1" "after prune --build-cache only FROM is cached"
# The size limit: a build that adds to the cache trims it to KILN_BUILD_CACHE_MAX, least recently
# used records first, and their blobs go with them.
printf 'FROM busybox\nRUN head -c 300000 /dev/urandom > /big\n' >"$ctx/Dockerfile"
KILN_BUILD_CACHE_MAX=100k kiln build --progress quiet -t limited:1 "$ctx" >/dev/null || fail "build under a limit"
records=$(ls "$KILN_ROOT/cache/build" | wc -l)
kiln build --progress plain -t limited:1 "$ctx" >/dev/null 2>"$WORK/progress" || fail "build again"
assert_contains "$(cat "$WORK/progress")" "cache miss: RUN head -c 300000 /dev/urandom > /big — the cache has no record of it" \
  "the record over the limit was trimmed: the step runs again, and says why"
assert_eq "$(ls "$KILN_ROOT/cache/build" | wc -l)" "$((records + 1))" "without a limit the new record stays"
echo ok

#!/usr/bin/env bash
# .dockerignore as Docker applies it: `**`, `!` exceptions in order, a directory's contents with it,
# comments and blank lines; an ignored file cannot be copied; <Dockerfile>.dockerignore beside the
# Dockerfile wins; a change of the ignore file that changes what is copied runs the COPY again.
source "$(dirname "$0")/lib.sh"
need_root_sandbox

busybox_image busybox:latest
ctx=$WORK/ctx
mkdir -p "$ctx"/{src/vendor,logs,docs/private,node_modules/pkg}
touch "$ctx"/{README.md,notes.tmp} "$ctx"/src/{main.c,main.o,keep.o} "$ctx"/src/vendor/lib.c \
  "$ctx"/logs/{a.log,keep.log} "$ctx"/docs/{guide.md,private/secret.md} "$ctx"/node_modules/pkg/index.js
printf 'FROM busybox\nCOPY . /ctx/\n' >"$ctx/Dockerfile"
cat >"$ctx/.dockerignore" <<'IGNORE'
# build artefacts
**/*.o
!src/keep.o

*.tmp
logs
!logs/keep.log
docs/private
node_modules
IGNORE
listing() { kiln run --rm "$1" find /ctx -type f | sort | tr '\n' ' '; }

kiln build --progress plain -t ignore:1 "$ctx" >/dev/null 2>"$WORK/progress" || fail "build: $(cat "$WORK/progress")"
assert_eq "$(listing ignore:1)" \
  "/ctx/.dockerignore /ctx/Dockerfile /ctx/README.md /ctx/docs/guide.md /ctx/logs/keep.log /ctx/src/keep.o /ctx/src/main.c /ctx/src/vendor/lib.c " \
  "what .dockerignore lets through"

printf 'FROM busybox\nCOPY notes.tmp /\n' >"$ctx/Dockerfile.copy-ignored"
expect_fail 1 'COPY failed: "/notes.tmp": not found' kiln build -f "$ctx/Dockerfile.copy-ignored" "$ctx"

# <Dockerfile>.dockerignore beside the Dockerfile takes precedence.
printf 'FROM busybox\nCOPY . /ctx/\n' >"$ctx/Other.Dockerfile"
printf '*\n!README.md\n' >"$ctx/Other.Dockerfile.dockerignore"
kiln build --progress plain -t ignore:2 -f "$ctx/Other.Dockerfile" "$ctx" >/dev/null 2>"$WORK/progress" || fail "build 2"
assert_eq "$(listing ignore:2)" "/ctx/README.md " "Other.Dockerfile.dockerignore wins"

# Changing the ignore file changes what COPY brings, and the cache sees it.
printf '*\n!README.md\n!docs\n' >"$ctx/Other.Dockerfile.dockerignore"
kiln build --progress plain -t ignore:2 -f "$ctx/Other.Dockerfile" "$ctx" >/dev/null 2>"$WORK/progress" || fail "build 3"
assert_contains "$(cat "$WORK/progress")" "cache miss: COPY . /ctx/ — docs added" "the miss names what the ignore file let in"
assert_eq "$(listing ignore:2)" "/ctx/README.md /ctx/docs/guide.md /ctx/docs/private/secret.md " "the new rules"
echo ok

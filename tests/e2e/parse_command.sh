#!/usr/bin/env bash
# kiln parse as users run it: a file or standard input, text and JSON output, --build-arg, --target,
# --check, and compiler-style diagnostics with Docker's exit codes.
source "$(dirname "$0")/lib.sh"
need jq

cd "$WORK"
cat >Dockerfile <<'EOF'
# syntax=docker/dockerfile:1
ARG BASE=alpine:3.19
FROM ${BASE} AS build
ARG MODE=debug
RUN --mount=type=cache,target=/root/.cache \
    make MODE=$MODE
FROM scratch AS app
COPY --from=build /out /app
CMD ["/app"]
FROM build AS test
RUN make test
EOF

# The default file is ./Dockerfile; text output shows stages, expansions and the build order.
out=$(kiln parse)
assert_contains "$out" "stage 0 (build): from alpine:3.19"
assert_contains "$out" "target test; build order: build, test"

# JSON: arguments as written and expanded, the graph pruned to --target.
json=$(kiln parse --format json --build-arg MODE=release --build-arg BASE=debian:12 --target app)
assert_eq "$(jq -r '.stages[0].base' <<<"$json")" "debian:12" "global ARG from --build-arg"
assert_eq "$(jq -c '.order' <<<"$json")" "[0,1]" "stages the target needs"
assert_eq "$(jq -r '.instructions[2].expanded.args[0].value' <<<"$json")" "release" "stage ARG from --build-arg"
assert_eq "$(jq -r '.instructions[3].args[0]' <<<"$json")" "make MODE=\$MODE" "RUN kept as written"
assert_eq "$(jq -r '.instructions[3].end_line' <<<"$json")" "6" "continuation lines"
assert_eq "$(jq -c '.instructions[6].args' <<<"$json")" '["/app"]' "exec form"
assert_eq "$(jq -r '.instructions[6].json' <<<"$json")" "true" "exec form marked as JSON"

# Standard input, and the same JSON whether read from a file or a pipe.
assert_eq "$(kiln parse -f - --format json <Dockerfile | jq -c .stages)" "$(kiln parse --format json | jq -c .stages)" \
  "stdin and file agree"

# -q prints nothing and succeeds for a valid file.
assert_eq "$(kiln parse -q)" "" "quiet output"

# A typo: file:line:column, the line, a caret under the word, a suggestion; exit 1.
printf 'FROM scratch\nRUNN make\n' >bad.Dockerfile
expect_fail 1 'bad.Dockerfile:2:1: unknown instruction "RUNN" (did you mean "RUN"?)' kiln parse -f bad.Dockerfile
assert_eq "$(sed -n 2,3p "$WORK/err")" "$(printf '    RUNN make\n    ^')" "source line and caret"
expect_fail 1 'target stage "nope" could not be found' kiln parse --target nope
expect_fail 1 "the Dockerfile is empty" kiln parse -f - </dev/null
expect_fail 1 "open \`missing\`" kiln parse -f missing
expect_fail 125 "--format" kiln parse --format yaml

# --check warns on stderr without failing; `# check=error=true` makes warnings fail.
printf 'FROM alpine as base\nCMD echo hi\n' >lint.Dockerfile
kiln parse --check -f lint.Dockerfile >/dev/null 2>"$WORK/warn" || fail "--check failed on warnings"
assert_contains "$(cat "$WORK/warn")" "lint.Dockerfile:2:1: warning: JSONArgsRecommended"
assert_contains "$(cat "$WORK/warn")" "lint.Dockerfile:1:13: warning: FromAsCasing"
printf '# check=error=true\nFROM alpine\nCMD echo hi\n' >strict.Dockerfile
expect_fail 1 "1 build check warning" kiln parse --check -f strict.Dockerfile
echo ok

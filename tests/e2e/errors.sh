#!/usr/bin/env bash
# Bad input gets `kiln: error: …` naming what and where, with Docker's exit codes; --help works.
source "$(dirname "$0")/lib.sh"

expect_fail 125 "unknown flag or argument: --no-such-flag" kiln images --no-such-flag
# An unknown command is named, with the nearest one when it is a likely typo (as docker and git do).
expect_fail 125 "" kiln frobnicate
assert_eq "$(<"$WORK/err")" "kiln: error: unknown command \"frobnicate\" for \"kiln\"
Run 'kiln --help' for usage." "kiln frobnicate"
expect_fail 125 "" kiln --root "$WORK/store" imgaes
assert_eq "$(<"$WORK/err")" "kiln: error: unknown command \"imgaes\" for \"kiln\"
Did you mean \"images\"?
Run 'kiln --help' for usage." "kiln imgaes"
expect_fail 125 "" kiln --no-such-flag
assert_eq "$(<"$WORK/err")" "kiln: error: unknown flag or argument: --no-such-flag
Run 'kiln --help' for usage." "kiln --no-such-flag"
# No command at all: the help, as docker gives it.
out=$(kiln) || fail "kiln with no command failed"
assert_contains "$out" "Usage: kiln [OPTIONS] SUBCOMMAND" "kiln with no command"
expect_fail 1 "open \`$WORK/missing.tar\`: No such file or directory" kiln import "$WORK/missing.tar"
expect_fail 1 "invalid reference format \`Busybox\`: repository name must be lowercase" \
  kiln import "$WORK/missing.tar" Busybox
expect_fail 1 "no such image: \`nothing:here\`" kiln history nothing:here
expect_fail 1 "no such image: \`nothing\`" kiln save -o "$WORK/x.tar" nothing
[[ ! -e $WORK/x.tar ]] || fail "a failed save left its output file behind"
expect_fail 125 "--change \`RUN true\`: RUN is not allowed here" kiln import -c 'RUN true' - x </dev/null
expect_fail 1 "empty input" kiln import - x </dev/null
printf 'not a tar archive at all, just text that goes on for a while........................\n%.0s' {1..20} >"$WORK/junk"
expect_fail 1 "import \`$WORK/junk\`" kiln import "$WORK/junk" junk
expect_fail 125 "SOURCE_DATE_EPOCH" env SOURCE_DATE_EPOCH=yesterday "$KILN" import "$WORK/junk" x
assert_eq "$(kiln images -q)" "" "failed imports left no image"

for c in import save load export history images inspect tag rmi prune version; do
  out=$(kiln "$c" --help) || fail "kiln $c --help failed"
  assert_contains "$out" "Usage" "kiln $c --help"
done
assert_contains "$(kiln --version)" "kiln version" "--version"
assert_contains "$(kiln version)" "kiln version" "version"
echo ok

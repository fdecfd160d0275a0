#!/usr/bin/env bash
# Dockerfile parser benchmark (not a timed test). Generates Dockerfiles of 2,000, 20,000 and 200,000
# lines — a realistic mix of stages, ARG/ENV/LABEL, RUN with continuations and comments inside,
# heredocs, COPY --from between stages — and times, in one run, side by side:
#   kiln:  `kiln parse -q` as a whole process (read, parse, word expansion, build graph), and the
#          same work in-process, cold, without process start-up (build/tests/kiln_parse_bench);
#   peer:  dockerfile-ast (the Dockerfile parser of VS Code's Docker support, Node.js, from npm) on
#          the same file: as a whole process, and its parse alone timed inside Node.
# Prints medians, peak RSS, and peer/kiln ratios for both.
# Usage: tests/bench/parse.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/deps.sh
kiln_install_packages hyperfine python3 time jq
# Node.js and npm for the peer: used when present (machines here have them outside apt), else
# installed from Debian.
command -v node >/dev/null && command -v npm >/dev/null || kiln_install_packages nodejs npm

BUILD=${1:-build}
KILN=$BUILD/cli/kiln
INPROC=$BUILD/tests/kiln_parse_bench
[[ -x $KILN && -x $INPROC ]] || { echo "no kiln or kiln_parse_bench under $BUILD (build first)" >&2; exit 1; }
WORK=$(mktemp -d /dev/shm/kiln-bench-parse.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# The peer, pinned, installed from the npm registry into the scratch directory.
(cd "$WORK" && npm install --silent --no-audit --no-fund dockerfile-ast@0.6.1 >/dev/null 2>&1) ||
  { echo "could not install dockerfile-ast from npm; the peer is skipped" >&2; NO_PEER=1; }
cat >"$WORK/peer.js" <<'EOF'
const fs = require('fs');
const { DockerfileParser } = require('dockerfile-ast');
const text = fs.readFileSync(process.argv[2], 'utf8');
const start = process.hrtime.bigint();
const dockerfile = DockerfileParser.parse(text);
let args = 0;
for (const instruction of dockerfile.getInstructions()) args += instruction.getArguments().length;
const parseMs = Number(process.hrtime.bigint() - start) / 1e6;
if (args === 0 && text.length > 100) process.exit(1);
if (process.argv[3] === '--time') console.log(parseMs.toFixed(2));
EOF
printf 'FROM scratch\n' >"$WORK/tiny.Dockerfile"

generate() {
  python3 - "$1" "$2" <<'EOF'
import sys
lines_wanted, path = int(sys.argv[1]), sys.argv[2]
out = ["# syntax=docker/dockerfile:1", "ARG BASE=debian:12", "ARG VERSION=1.2.3", ""]
stage = 0
# Whole stages only, so that no heredoc or continuation is cut; comment lines make up the rest.
while True:
    before = len(out)
    prev = f"s{stage - 1}" if stage else None
    out += [f"# stage {stage}",
            f"FROM ${{BASE}} AS s{stage}",
            "ARG VERSION",
            f"ENV APP_HOME=/opt/app{stage} PATH=/opt/app{stage}/bin:$PATH LANG=C.UTF-8",
            f'LABEL org.opencontainers.image.version="${{VERSION}}" stage="{stage}"',
            "WORKDIR $APP_HOME"]
    for block in range(12):
        out += [f"RUN --mount=type=cache,target=/var/cache/apt{block} \\",
                "    apt-get update && \\",
                "    # keep the image small",
                "    apt-get install -y --no-install-recommends \\",
                f"        curl ca-certificates pkg{block}-dev && \\",
                "    rm -rf /var/lib/apt/lists/*",
                f"COPY --chown=app:app src/{block}/ $APP_HOME/src/{block}/",
                f"RUN <<EOF{block}",
                "set -eu",
                f"echo building part {block} of ${{VERSION}}",
                f"EOF{block}",
                ""]
    if prev:
        out.append(f"COPY --from={prev} /opt/app{stage - 1}/bin/ /opt/prev/")
    out += ['CMD ["/opt/app/bin/server", "--port", "8080"]', ""]
    stage += 1
    if len(out) > lines_wanted:
        del out[before:]
        break
out += ["# padding"] * (lines_wanted - len(out))
with open(path, "w") as f:
    f.write("\n".join(out) + "\n")
EOF
}

median_ms() { jq -r '.results[0].median * 1000 | . * 100 | round / 100' "$1"; }
peak_kb() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n1; }
median_of() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ratio() { python3 -c "print(f'{$1 / $2:.1f}x')"; }

echo "date: $(date -u +%Y-%m-%d)  kiln: $($KILN --version)  host: $(nproc) cores"
printf '%-7s | %10s %10s %9s | %10s %10s %9s | %9s %9s\n' lines "kiln ms" "in-proc" "RSS KB" \
  "peer ms" "in-proc" "RSS KB" "process" "in-proc"
for lines in 2000 20000 200000; do
  file="$WORK/$lines.Dockerfile"
  generate "$lines" "$file"
  "$KILN" parse -q -f "$file" || { echo "kiln failed to parse the generated $lines-line file" >&2; exit 1; }
  runs=$([[ $lines -ge 200000 ]] && echo 5 || echo 20)
  hyperfine -N --warmup 2 --runs "$runs" --export-json "$WORK/kiln.json" "$KILN parse -q -f $file" >/dev/null
  kiln_ms=$(median_ms "$WORK/kiln.json")
  kiln_kb=$(peak_kb "$KILN" parse -q -f "$file")
  # In-process, cold: a fresh process per sample, field 4 is read+parse+graph in ms.
  kiln_in=$(for _ in $(seq "$runs"); do "$INPROC" "$file" | cut -d' ' -f4; done | median_of)
  if [[ -z ${NO_PEER:-} ]]; then
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$WORK/peer.json" "node $WORK/peer.js $file" >/dev/null
    peer_ms=$(median_ms "$WORK/peer.json")
    peer_kb=$(peak_kb node "$WORK/peer.js" "$file")
    peer_in=$(for _ in $(seq "$runs"); do node "$WORK/peer.js" "$file" --time; done | median_of)
    printf '%-7s | %10s %10s %9s | %10s %10s %9s | %9s %9s\n' "$lines" "$kiln_ms" "$kiln_in" "$kiln_kb" \
      "$peer_ms" "$peer_in" "$peer_kb" "$(ratio "$peer_ms" "$kiln_ms")" "$(ratio "$peer_in" "$kiln_in")"
  else
    printf '%-7s | %10s %10s %9s | (peer skipped)\n' "$lines" "$kiln_ms" "$kiln_in" "$kiln_kb"
  fi
done
hyperfine -N --warmup 3 --runs 30 --export-json "$WORK/floor.json" "$KILN parse -q -f $WORK/tiny.Dockerfile" >/dev/null
echo "kiln process floor (a one-line Dockerfile): $(median_ms "$WORK/floor.json") ms; ratios above 1x mean kiln is faster"

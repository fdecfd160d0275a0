#!/bin/sh
# Puts the pages together, each under its title.
for page in *.txt; do
  echo "== ${page%.txt}"
  cat "$page"
done

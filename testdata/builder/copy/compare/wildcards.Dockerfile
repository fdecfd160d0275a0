# Wildcards as BuildKit resolves them: matched directories copied by their contents, no match no
# error (and nothing made).
FROM copy-base:1
COPY *.txt /w1/
COPY dir2/*/x /w2/
COPY nomatch* /w3/
COPY dir2/[ab] /w4/
COPY dir?/a /w5/
COPY d*r /w6/
COPY dir2/* /w7/
COPY *.txt nomatch* /w8/
COPY link-to-dir/s* /w9/

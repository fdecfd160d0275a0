# a comment first
# escape=`
FROM scratch
COPY a \
  b /

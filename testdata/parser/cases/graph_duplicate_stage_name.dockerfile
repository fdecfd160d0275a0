FROM alpine AS dup
FROM busybox AS dup
FROM scratch
COPY --from=dup / /

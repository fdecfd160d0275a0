FROM alpine AS a
FROM alpine AS B
COPY --from=a / /
FROM alpine AS c

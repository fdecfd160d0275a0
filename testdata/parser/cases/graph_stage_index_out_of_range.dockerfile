FROM alpine
COPY --from=3 / /

FROM --platform=$BUILDPLATFORM alpine AS build
FROM alpine AS final
COPY --from=build --chown=app:app --chmod=0644 --link --parents --exclude=*.md --exclude=*.txt a b /dst/
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d --keep-git-dir=true --link=false https://example.com/a.tar /a
RUN --mount=type=cache,target=/root/.cache,sharing=locked --mount=type=secret,id=token --network=none --security=sandbox make
RUN --mount=type=bind,from=build,source=/src,target=/src,rw --mount=type=tmpfs,target=/tmp,size=64m --mount=type=ssh true
HEALTHCHECK --interval=30s --timeout=1m30s --start-period=5s --start-interval=500ms --retries=3 CMD curl -f http://localhost/
COPY --chown="a b" --from='build' c /d

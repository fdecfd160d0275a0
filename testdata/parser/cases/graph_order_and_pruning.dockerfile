FROM alpine AS deps
RUN fetch
FROM alpine AS unused
RUN never
FROM deps AS build
RUN --mount=type=bind,from=tools,target=/tools make
COPY --from=0 /a /a
FROM busybox AS tools
FROM scratch AS final
COPY --from=build /out /out
COPY --from=docker.io/library/nginx:1.27 /etc/nginx /etc/nginx

FROM alpine AS build
FROM scratch
COPY --from=biuld /out /out
RUN --mount=from=buidl,target=/b true

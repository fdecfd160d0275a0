FROM scratch
RUN --network=host -- --not-a-flag
COPY --link -- --weird-name /dst/

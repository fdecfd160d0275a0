FROM scratch
HEALTHCHECK PING localhost

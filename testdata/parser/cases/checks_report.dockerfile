FROM alpine as Build
MAINTAINER someone
ENV API_TOKEN=abc
run echo $UNDEFINED_THING
CMD echo one
CMD echo two
WORKDIR relative
FROM --platform=linux/amd64 alpine:${NOPE}
ENTRYPOINT ["ok"]

from alpine AS base
Run echo hi
cmd ["sh"]
LABEL a=b
EXPOSE 80
ENV K=v
ADD a /b
COPY c /d
ENTRYPOINT ["/e"]
VOLUME /data
USER app
WORKDIR /w
ARG X
ONBUILD RUN true
STOPSIGNAL SIGTERM
HEALTHCHECK NONE
SHELL ["/bin/bash", "-c"]
MAINTAINER someone

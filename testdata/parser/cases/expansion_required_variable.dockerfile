FROM scratch
ARG NEEDED
WORKDIR /src/${NEEDED:?is required}

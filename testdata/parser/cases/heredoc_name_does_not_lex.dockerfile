FROM scratch
COPY <<${+} /x

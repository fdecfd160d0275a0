FROM scratch
ENV A=${B

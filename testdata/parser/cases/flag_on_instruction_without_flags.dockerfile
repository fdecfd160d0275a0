FROM scratch
ENV --x=1 A=b

FROM scratch
RUN a \
 b
CMD ["x"]

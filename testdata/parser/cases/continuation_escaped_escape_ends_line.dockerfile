FROM scratch
RUN echo \\
RUN echo two\\ 
RUN \
  three

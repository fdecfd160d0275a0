FROM scratch
RUN echo a \
# a comment inside
    # indented comment

   
  b \  	
  c
RUN last \
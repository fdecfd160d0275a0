ARG ONLY=args
ARG NO=stage

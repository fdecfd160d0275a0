FROM scratch
  RUNN make

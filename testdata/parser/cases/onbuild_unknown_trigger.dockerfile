FROM scratch
ONBUILD FROBNICATE the child

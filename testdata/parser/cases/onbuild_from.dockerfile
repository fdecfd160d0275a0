FROM scratch
onbuild from alpine

FROM scratch
frobnicate all the things

#!/usr/bin/env kiln
# Syntax = docker/dockerfile:1.7
#check=skip=JSONArgsRecommended;error=true
#  escape = \   
# unknown=ends-directives
# escape=`
FROM scratch
CMD run me

# How kiln links its C and C++ dependencies. Every target of ours links kiln::archive, kiln::nettle,
# kiln::zlib, kiln::zstd, kiln::seccomp and kiln::fmt, never the packages' own targets, so that one
# binary never mixes a static and a shared copy of the same library.
#
# With KILN_STATIC_DEPS (the default, except under sanitizers and the fuzz build) they are the static
# archives Debian's -dev packages ship, and libstdc++ and libgcc are linked statically too. A shared
# build spends most of `kiln --version` in the dynamic loader: mapping ~20 libraries (libarchive
# alone drags in libxml2 and ICU) and applying their relocations, each dirtied page costing a page
# fault. A missing archive falls back to the shared library, with a message saying which.

# KILN_SANITIZERS (CMakeLists.txt) is set for ASan+UBSan and for TSan alike.
if(KILN_SANITIZERS OR KILN_FUZZ)
  set(KILN_STATIC_DEPS_DEFAULT OFF)
else()
  set(KILN_STATIC_DEPS_DEFAULT ON)
endif()
option(KILN_STATIC_DEPS "Link libarchive, nettle, zlib, zstd, libseccomp and libstdc++ statically"
       ${KILN_STATIC_DEPS_DEFAULT})

# kiln_link_dep(NAME SHARED_TARGET ARCHIVES a... [LIBS l...] [LINK_OPTIONS o...]): kiln::NAME links
# the static archives lib<a>.a, in that order (a library before what it needs), then LIBS, and adds
# LINK_OPTIONS to whatever links it; or SHARED_TARGET when one of the archives is missing.
function(kiln_link_dep name shared_target)
  cmake_parse_arguments(PARSE_ARGV 2 arg "" "" "ARCHIVES;LIBS;LINK_OPTIONS")
  add_library(kiln::${name} INTERFACE IMPORTED GLOBAL)
  if(KILN_STATIC_DEPS)
    set(paths)
    set(missing)
    foreach(a IN LISTS arg_ARCHIVES)
      find_library(KILN_STATIC_LIB_${a} NAMES lib${a}.a)
      if(KILN_STATIC_LIB_${a})
        list(APPEND paths ${KILN_STATIC_LIB_${a}})
      else()
        list(APPEND missing lib${a}.a)
      endif()
    endforeach()
    if(NOT missing)
      # The archives' include directories and compile definitions still come from the package.
      target_include_directories(kiln::${name} INTERFACE
                                 $<TARGET_PROPERTY:${shared_target},INTERFACE_INCLUDE_DIRECTORIES>)
      target_link_libraries(kiln::${name} INTERFACE ${paths} ${arg_LIBS})
      target_link_options(kiln::${name} INTERFACE ${arg_LINK_OPTIONS})
      message(STATUS "kiln: ${name} linked statically")
      return()
    endif()
    list(JOIN missing ", " missing)
    message(WARNING "KILN_STATIC_DEPS: ${missing} not found (install the -dev packages listed in "
                    "tests/deps.sh); linking ${name} as a shared library, which slows start-up")
  endif()
  target_link_libraries(kiln::${name} INTERFACE ${shared_target})
endfunction()

# libarchive's Libs.private also lists acl, lz4 and libxml2: the objects kiln uses do not need them
# once --gc-sections drops the unused writers. The pax writer needs archive_write_set_format.o, which
# refers to every format's writer, xar's among them, and that one calls libxml2 (and through it ICU).
# Debian compiles libarchive with one section per function, so the linker can drop them; without
# --gc-sections every executable linking the archive fails on libxml2's symbols.
kiln_link_dep(archive LibArchive::LibArchive ARCHIVES archive nettle lzma bz2 zstd z
              LINK_OPTIONS LINKER:--gc-sections)
kiln_link_dep(nettle PkgConfig::NETTLE ARCHIVES nettle)
kiln_link_dep(zlib ZLIB::ZLIB ARCHIVES z)
kiln_link_dep(zstd zstd::libzstd_shared ARCHIVES zstd)
kiln_link_dep(seccomp PkgConfig::SECCOMP ARCHIVES seccomp)

# Debian ships ISA-L (libisal-dev) as a shared library only. It costs the loader little: hand-written
# assembly with a few dozen relocations, and no further libraries of its own.
add_library(kiln::isal INTERFACE IMPORTED GLOBAL)
target_link_libraries(kiln::isal INTERFACE PkgConfig::ISAL)

# Debian ships fmt as a shared library only, and loading it made the dynamic loader map libstdc++
# and libgcc_s too. Statically, fmt's compiled part is built here from the package's own headers,
# once (cmake/fmt_library.cpp); the header-only form would compile it into every file instead.
add_library(kiln::fmt INTERFACE IMPORTED GLOBAL)
if(KILN_STATIC_DEPS)
  add_library(kiln_fmt STATIC ${CMAKE_CURRENT_LIST_DIR}/fmt_library.cpp)
  target_include_directories(kiln_fmt SYSTEM PUBLIC $<TARGET_PROPERTY:fmt::fmt,INTERFACE_INCLUDE_DIRECTORIES>)
  target_link_libraries(kiln::fmt INTERFACE kiln_fmt)
  message(STATUS "kiln: fmt linked statically")
else()
  target_link_libraries(kiln::fmt INTERFACE fmt::fmt)
endif()

# Link options for kiln's executables (kiln_static_runtime links them in).
add_library(kiln_static_runtime INTERFACE)
if(KILN_STATIC_DEPS)
  include(CheckLinkerFlag)
  target_link_options(kiln_static_runtime INTERFACE LINKER:-O1 LINKER:--as-needed)
  # What relocations remain (PIE) are relative ones: packed (DT_RELR, glibc 2.36) they take a few
  # KiB instead of half a MiB of RELA entries read at every start.
  check_linker_flag(CXX LINKER:-z,pack-relative-relocs KILN_LINKER_HAS_RELR)
  if(KILN_LINKER_HAS_RELR)
    target_link_options(kiln_static_runtime INTERFACE LINKER:-z,pack-relative-relocs)
  endif()
  target_link_options(kiln_static_runtime INTERFACE -static-libstdc++ -static-libgcc)
endif()


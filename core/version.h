/*  version.h: the splitmesh version and build facts every binary reports.  */
#ifndef SPLITMESH_VERSION_H
#define SPLITMESH_VERSION_H

#define SPLITMESH_VERSION_MAJOR 0
#define SPLITMESH_VERSION_MINOR 1
#define SPLITMESH_VERSION_PATCH 0

//  "splitmesh 0.1.0 (cuda|cpu-only, simd: avx512-vnni avx2 ...)" for --version
//  output and logs. Returns a static string; never fails.
const char *splitmesh_version_string (void);

#endif

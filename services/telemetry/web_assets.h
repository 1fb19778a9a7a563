/*  web_assets.h: the dashboard's static files, compiled in.

    web_assets.c is generated at build time by embed.cmake from the files in
    web/ (a byte copy; edit web/, never the generated file).
*/
#ifndef SPLITMESH_TELEMETRY_WEB_ASSETS_H
#define SPLITMESH_TELEMETRY_WEB_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *path;               //  URL path, e.g. "/index.html"
    const char *content_type;       //  HTTP Content-Type
    const unsigned char *data;      //  size bytes
    size_t size;
} telemetry_web_asset_t;

extern const telemetry_web_asset_t telemetry_web_assets [];
extern const size_t telemetry_web_asset_count;

#endif

/* eddy command line: uses only the public API. */
#include <stdio.h>
#include <string.h>

#include "eddy/eddy.h"

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("eddy %s\n", eddy_version());
        return 0;
    }
    fprintf(stderr, "usage: eddy run AGENT [options]\n");
    return 2;
}

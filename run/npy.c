/* .npy: "\x93NUMPY", version (1.0: u16 header length; 2.0 and 3.0: u32),
 * an ASCII dict {'descr': '<f4', 'fortran_order': False, 'shape': (T, D), }
 * padded with spaces to a multiple of 64 bytes, then the data. */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert.h"
#include "npy.h"

static bool fail(char *error, size_t size, const char *message)
{
    snprintf(error, size, "npy: %s", message);
    return false;
}

/* The text after 'key': in the header dict, or NULL. */
static const char *dict_value(const char *header, const char *key)
{
    const char *at = strstr(header, key);
    if (!at)
        return NULL;
    at += strlen(key);
    while (*at == ' ' || *at == ':')
        at++;
    return at;
}

/* "(T, D)" or "(D,)": at most two dimensions, each below 2^32. */
static bool parse_shape(const char *at, uint32_t *rows, uint32_t *cols)
{
    unsigned long long dims[2];
    int n = 0;
    if (!at || *at++ != '(')
        return false;
    while (n < 3) {
        while (*at == ' ')
            at++;
        if (*at == ')')
            break;
        char *end;
        unsigned long long v = strtoull(at, &end, 10);
        if (end == at || v == 0 || v > 0xffffffffull || n == 2)
            return false;
        dims[n++] = v;
        at = end;
        while (*at == ' ')
            at++;
        if (*at == ',')
            at++;
    }
    if (n == 0)
        return false;
    *rows = n == 2 ? (uint32_t)dims[0] : 1;
    *cols = (uint32_t)dims[n - 1];
    return true;
}

/* The header is one dict, "{...}", padded with spaces and a newline. */
static bool dict_complete(const char *header)
{
    size_t n = strlen(header);
    while (n > 0 && (header[n - 1] == ' ' || header[n - 1] == '\n'))
        n--;
    return header[0] == '{' && n > 1 && header[n - 1] == '}';
}

static bool read_header(const uint8_t *data, size_t size, size_t *data_start, char **header,
                        char *error, size_t error_size)
{
    if (size < 10 || memcmp(data, "\x93NUMPY", 6) != 0)
        return fail(error, error_size, "not a .npy file (magic)");
    size_t length, prefix;
    if (data[6] == 1) {
        length = (size_t)data[8] | (size_t)data[9] << 8;
        prefix = 10;
    } else if ((data[6] == 2 || data[6] == 3) && size >= 12) {
        length = (size_t)data[8] | (size_t)data[9] << 8 | (size_t)data[10] << 16 |
                 (size_t)data[11] << 24;
        prefix = 12;
    } else {
        return fail(error, error_size, "unknown .npy version");
    }
    if (length > size - prefix || length > (1u << 20))
        return fail(error, error_size, "header past the end of the file");
    *header = malloc(length + 1);
    if (!*header)
        return fail(error, error_size, "out of memory");
    memcpy(*header, data + prefix, length);
    (*header)[length] = '\0';
    *data_start = prefix + length;
    return true;
}

bool npy_parse(const uint8_t *data, size_t size, float **values, uint32_t *rows, uint32_t *cols,
               char *error, size_t error_size)
{
    size_t start;
    char *header;
    if (!read_header(data, size, &start, &header, error, error_size))
        return false;
    const char *descr = dict_value(header, "'descr'");
    const char *order = dict_value(header, "'fortran_order'");
    bool f32 = descr && strncmp(descr, "'<f4'", 5) == 0;
    bool f16 = descr && strncmp(descr, "'<f2'", 5) == 0;
    bool ok = dict_complete(header) ? true
                                    : fail(error, error_size,
                                           "the header is truncated (its "
                                           "dict has no closing '}')");
    if (ok && descr && !f32 && !f16)
        ok = fail(error, error_size, "dtype is not '<f4' or '<f2'");
    if (ok && (!descr || !order || !dict_value(header, "'shape'")))
        ok = fail(error, error_size, "the header lacks 'descr', 'fortran_order' or 'shape'");
    if (ok && strncmp(order, "False", 5) != 0)
        ok = fail(error, error_size, "fortran_order arrays are not supported");
    if (ok && !parse_shape(dict_value(header, "'shape'"), rows, cols))
        ok = fail(error, error_size, "shape is not (tokens, dim) or (dim,)");
    free(header);
    size_t element = f32 ? 4 : 2, n = ok ? (size_t)*rows * *cols : 0;
    if (ok && (n > (size - start) / element))
        ok = fail(error, error_size, "the data is shorter than the shape says");
    *values = ok ? malloc(n * sizeof(float)) : NULL;
    if (ok && !*values)
        ok = fail(error, error_size, "out of memory");
    for (size_t i = 0; ok && i < n; i++) {
        const uint8_t *p = data + start + i * element;
        uint16_t h = (uint16_t)(p[0] | p[1] << 8);
        if (f16)
            (*values)[i] = vkmoe_f16_to_f32(h);
        else
            memcpy(&(*values)[i], p, 4); /* little-endian hosts only, as vkmoe */
    }
    return ok;
}

bool npy_read(const char *path, float **values, uint32_t *rows, uint32_t *cols, char *error,
              size_t error_size)
{
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        snprintf(error, error_size, "npy: cannot open %s", path);
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(error, error_size, "npy: %s is not a regular file", path);
        return false;
    }
    size_t size = (size_t)st.st_size, done = 0;
    uint8_t *data = size > 0 ? malloc(size) : NULL;
    while (data && done < size) {
        ssize_t n = read(fd, data + done, size - done);
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    close(fd);
    bool ok = data && done == size;
    if (ok)
        ok = npy_parse(data, size, values, rows, cols, error, error_size);
    else
        snprintf(error, error_size, "npy: cannot read %s", path);
    free(data);
    return ok;
}

bool npy_write(const char *path, const float *values, uint32_t rows, uint32_t cols)
{
    char header[128];
    int n = snprintf(header, sizeof(header),
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%u, %u), }", rows, cols);
    /* Pad so that magic, version, length and header end on a 64-byte line. */
    while ((10 + n + 1) % 64)
        header[n++] = ' ';
    header[n++] = '\n';
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    uint8_t prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)n, (uint8_t)(n >> 8)};
    bool ok = fwrite(prefix, 1, 10, f) == 10 && fwrite(header, 1, (size_t)n, f) == (size_t)n &&
              fwrite(values, sizeof(float), (size_t)rows * cols, f) == (size_t)rows * cols;
    return fclose(f) == 0 && ok;
}

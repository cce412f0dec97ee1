/* JSON reader: see json.h. Recursive descent over a NUL-terminated copy of
 * the text, so that number parsing can never run past the end. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "json.h"
#include "parse_error.h"

typedef struct parser {
    const char *text; /* NUL-terminated copy */
    size_t size, at;
    char *error;
    size_t error_size;
    bool failed;
} parser;

static bool fail(parser *p, const char *fmt, ...)
{
    if (!p->failed) {
        char message[160];
        va_list args;
        va_start(args, fmt);
        vsnprintf(message, sizeof(message), fmt, args);
        va_end(args);
        snprintf(p->error, p->error_size, "JSON at byte %zu: %s", p->at, message);
        p->failed = true;
    }
    return false;
}

static void skip_space(parser *p)
{
    while (p->at < p->size && strchr(" \t\r\n", p->text[p->at]) && p->text[p->at])
        p->at++;
}

static bool expect_word(parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->size - p->at < n || memcmp(p->text + p->at, word, n) != 0)
        return fail(p, "unexpected character");
    p->at += n;
    return true;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool read_hex4(parser *p, uint32_t *out)
{
    *out = 0;
    for (int i = 0; i < 4; i++) {
        int d = p->at < p->size ? hex_digit(p->text[p->at]) : -1;
        if (d < 0)
            return fail(p, "bad \\u escape");
        *out = *out << 4 | (uint32_t)d;
        p->at++;
    }
    return true;
}

static size_t put_utf8(char *out, uint32_t c)
{
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xc0 | c >> 6);
        out[1] = (char)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xe0 | c >> 12);
        out[1] = (char)(0x80 | (c >> 6 & 0x3f));
        out[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | c >> 18);
    out[1] = (char)(0x80 | (c >> 12 & 0x3f));
    out[2] = (char)(0x80 | (c >> 6 & 0x3f));
    out[3] = (char)(0x80 | (c & 0x3f));
    return 4;
}

/* \uXXXX, with a following low surrogate when this one is high. */
static bool read_unicode_escape(parser *p, uint32_t *code)
{
    if (!read_hex4(p, code))
        return false;
    if (*code >= 0xdc00 && *code < 0xe000)
        return fail(p, "lone low surrogate");
    if (*code >= 0xd800 && *code < 0xdc00) {
        uint32_t low;
        if (!expect_word(p, "\\u") || !read_hex4(p, &low))
            return false;
        if (low < 0xdc00 || low >= 0xe000)
            return fail(p, "high surrogate without its low half");
        *code = 0x10000 + ((*code - 0xd800) << 10) + (low - 0xdc00);
    }
    if (*code == 0)
        return fail(p, "\\u0000 in a string");
    return true;
}

static bool read_escape(parser *p, char *out, size_t *len)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    char c = p->at < p->size ? p->text[p->at++] : '\0';
    const char *hit = c ? strchr(from, c) : NULL;
    if (hit) {
        out[(*len)++] = to[hit - from];
        return true;
    }
    if (c != 'u')
        return fail(p, "bad escape");
    uint32_t code;
    if (!read_unicode_escape(p, &code))
        return false;
    *len += put_utf8(out + *len, code);
    return true;
}

/* A string at p->at (its opening quote); the unescaped copy is never
 * longer than the escaped text. */
static bool no_memory(parser *p)
{
    p->failed = true;
    return vkmoe_parse_no_memory(p->error, p->error_size);
}

static bool read_string(parser *p, char **out)
{
    p->at++;
    size_t end = p->at;
    while (end < p->size && p->text[end] != '"')
        end += p->text[end] == '\\' && end + 1 < p->size ? 2 : 1;
    if (end >= p->size)
        return fail(p, "unterminated string");
    char *s = vkmoe_malloc(end - p->at + 1);
    if (!s)
        return no_memory(p);
    size_t len = 0;
    while (p->at < end) {
        char c = p->text[p->at++];
        if ((unsigned char)c < 0x20) {
            free(s);
            return fail(p, "control character in a string");
        }
        if (c != '\\')
            s[len++] = c;
        else if (!read_escape(p, s, &len)) {
            free(s);
            return false;
        }
    }
    p->at++;
    s[len] = '\0';
    *out = s;
    return true;
}

static bool read_number(parser *p, vkmoe_json *v)
{
    const char *start = p->text + p->at;
    size_t n = strspn(start, "+-0123456789.eE");
    if (n == 0 || n > 64)
        return fail(p, "unexpected character");
    char buf[65];
    memcpy(buf, start, n);
    buf[n] = '\0';
    char *end;
    v->number = strtod(buf, &end);
    if (end != buf + n || !isfinite(v->number))
        return fail(p, "bad number");
    v->type = VKMOE_JSON_NUMBER;
    p->at += n;
    return true;
}

static bool read_value(parser *p, vkmoe_json *v, unsigned depth);

/* Children of an array or object up to `close`; objects read "key":
 * before each value. */
static bool read_children(parser *p, vkmoe_json *v, char close, unsigned depth)
{
    bool object = close == '}';
    size_t capacity = 0;
    p->at++;
    skip_space(p);
    if (p->at < p->size && p->text[p->at] == close) {
        p->at++;
        return true;
    }
    for (;;) {
        if (v->count == capacity) {
            capacity = capacity ? 2 * capacity : 4;
            if (capacity > UINT32_MAX / 2)
                return fail(p, "too many members");
            vkmoe_json *grown = vkmoe_realloc(v->children, capacity * sizeof(*grown));
            if (!grown)
                return no_memory(p);
            v->children = grown;
        }
        vkmoe_json *child = &v->children[v->count];
        memset(child, 0, sizeof(*child));
        v->count++;
        skip_space(p);
        if (object) {
            if (p->at >= p->size || p->text[p->at] != '"')
                return fail(p, "expected a key");
            if (!read_string(p, &child->key))
                return false;
            skip_space(p);
            if (!expect_word(p, ":"))
                return false;
        }
        if (!read_value(p, child, depth + 1))
            return false;
        skip_space(p);
        char c = p->at < p->size ? p->text[p->at++] : '\0';
        if (c == close)
            return true;
        if (c != ',')
            return fail(p, "expected ',' or '%c'", close);
    }
}

static bool read_value(parser *p, vkmoe_json *v, unsigned depth)
{
    if (depth > VKMOE_JSON_MAX_DEPTH)
        return fail(p, "nested deeper than %d", VKMOE_JSON_MAX_DEPTH);
    skip_space(p);
    char c = p->at < p->size ? p->text[p->at] : '\0';
    switch (c) {
    case '{':
        v->type = VKMOE_JSON_OBJECT;
        return read_children(p, v, '}', depth);
    case '[':
        v->type = VKMOE_JSON_ARRAY;
        return read_children(p, v, ']', depth);
    case '"':
        v->type = VKMOE_JSON_STRING;
        return read_string(p, &v->string);
    case 't':
        v->type = VKMOE_JSON_BOOL;
        v->boolean = true;
        return expect_word(p, "true");
    case 'f':
        v->type = VKMOE_JSON_BOOL;
        return expect_word(p, "false");
    case 'n':
        v->type = VKMOE_JSON_NULL;
        return expect_word(p, "null");
    case '\0':
        return fail(p, "unexpected end");
    default:
        return read_number(p, v);
    }
}

static void free_children(vkmoe_json *v)
{
    for (uint32_t i = 0; i < v->count; i++)
        vkmoe_json_free(&v->children[i]);
    free(v->children);
}

void vkmoe_json_free(vkmoe_json *v)
{
    if (!v)
        return;
    free_children(v);
    free(v->string);
    free(v->key);
    memset(v, 0, sizeof(*v));
}

bool vkmoe_json_parse(const char *text, size_t size, vkmoe_json *root, char *error,
                      size_t error_size)
{
    memset(root, 0, sizeof(*root));
    char *copy = vkmoe_malloc(size + 1);
    if (!copy)
        return vkmoe_parse_no_memory(error, error_size);
    memcpy(copy, text, size);
    copy[size] = '\0';
    parser p = {.text = copy, .size = size, .error = error, .error_size = error_size};
    bool ok = read_value(&p, root, 0);
    skip_space(&p);
    if (ok && p.at != size)
        ok = fail(&p, "text after the value");
    free(copy);
    if (!ok)
        vkmoe_json_free(root);
    return ok;
}

const vkmoe_json *vkmoe_json_get(const vkmoe_json *object, const char *key)
{
    if (!object || object->type != VKMOE_JSON_OBJECT)
        return NULL;
    for (uint32_t i = 0; i < object->count; i++)
        if (strcmp(object->children[i].key, key) == 0)
            return &object->children[i];
    return NULL;
}

bool vkmoe_json_as_u64(const vkmoe_json *v, uint64_t max, uint64_t *out)
{
    if (!v || v->type != VKMOE_JSON_NUMBER || v->number < 0 || v->number > (double)max ||
        v->number != floor(v->number) || v->number >= 9007199254740992.0)
        return false;
    *out = (uint64_t)v->number;
    return true;
}

bool vkmoe_json_get_u64(const vkmoe_json *object, const char *key, uint64_t max, uint64_t *out)
{
    return vkmoe_json_as_u64(vkmoe_json_get(object, key), max, out);
}

#!/usr/bin/env python3
"""Rewrite a SPIR-V module's NV cooperative matrices (SPV_NV_cooperative_matrix,
what Debian 12's glslc compiles) into KHR ones (SPV_KHR_cooperative_matrix,
what AMD's, Intel's and current NVIDIA drivers offer), and write it as the
braced word list glslc -mfmt=c writes.

The two extensions differ in three ways this handles:
- a KHR matrix type names its use (A, B or accumulator): an NV type that
  serves as both A and B (16x16 f16) becomes two types, and every value and
  variable of it takes the type of the operand it ends up in (traced
  through loads, stores, copies, phis and selects);
- loads and stores take a memory layout (row- or column-major, an id)
  before the stride instead of a column-major bool after it;
- the capability, the extension name and the opcodes.
The result is checked before it is written (verify()): no NV instruction
left, every matrix operand of a multiply-add of the use its place needs.

usage: spirv_khr.py INPUT.spv OUTPUT.spv.h
"""
import struct
import sys

OP_EXTENSION, OP_CAPABILITY = 10, 17
OP_TYPE_INT, OP_TYPE_POINTER = 21, 32
OP_CONSTANT_TRUE, OP_CONSTANT_FALSE, OP_CONSTANT = 41, 42, 43
OP_CONSTANT_COMPOSITE = 44
OP_VARIABLE, OP_LOAD, OP_STORE, OP_COPY_OBJECT = 59, 61, 62, 83
OP_PHI, OP_SELECT = 245, 169
CAP_NV, CAP_KHR = 5357, 6022
NV_TYPE, NV_LOAD, NV_STORE, NV_MULADD, NV_LENGTH = 5358, 5359, 5360, 5361, 5362
KHR_TYPE, KHR_LOAD, KHR_STORE, KHR_MULADD, KHR_LENGTH = 4456, 4457, 4458, 4459, 4460
USE_A, USE_B, USE_ACCUMULATOR = 0, 1, 2
ROLES = {"A": USE_A, "B": USE_B, "C": USE_ACCUMULATOR}


def words_of(path):
    data = open(path, "rb").read()
    words = list(struct.unpack("<%dI" % (len(data) // 4), data))
    if words[0] != 0x07230203:
        sys.exit("spirv_khr: %s is not SPIR-V" % path)
    return words


def instructions(words):
    at = 5
    while at < len(words):
        count, op = words[at] >> 16, words[at] & 0xFFFF
        yield op, words[at + 1:at + count]
        at += count


def encode(op, operands):
    return [(len(operands) + 1) << 16 | op] + list(operands)


def string_words(text):
    data = text.encode() + b"\0"
    data += b"\0" * (-len(data) % 4)
    return list(struct.unpack("<%dI" % (len(data) // 4), data))


# Instructions whose result has a result type: (result type index, result index).
def typed_result(op, ops):
    if op in (OP_LOAD, OP_COPY_OBJECT, OP_PHI, OP_SELECT, NV_LOAD, NV_MULADD, OP_VARIABLE,
              OP_CONSTANT_COMPOSITE):
        return ops[0], ops[1]
    return None


class Classes:
    """Union-find over ids that must share one matrix type."""

    def __init__(self):
        self.parent = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, a, b):
        self.parent[self.find(a)] = self.find(b)


def rewrite(words):
    insts = list(instructions(words))
    bound = words[3]
    nv_types = {ops[0]: ops for op, ops in insts if op == NV_TYPE}
    if not nv_types:
        sys.exit("spirv_khr: no NV cooperative matrix in the module")
    pointers = {ops[0]: ops for op, ops in insts if op == OP_TYPE_POINTER and ops[2] in nv_types}
    bools = {ops[1]: op == OP_CONSTANT_TRUE for op, ops in insts
             if op in (OP_CONSTANT_TRUE, OP_CONSTANT_FALSE)}
    uint = next(ops[0] for op, ops in insts if op == OP_TYPE_INT and ops[1:] == [32, 0])
    constants = {ops[2]: ops[1] for op, ops in insts
                 if op == OP_CONSTANT and ops[0] == uint and len(ops) == 3}

    # Which ids share a type, and which place of a multiply-add each class
    # ends in.
    classes, role = Classes(), {}
    type_of = {}
    for op, ops in insts:
        t = typed_result(op, ops)
        if t:
            type_of[t[1]] = t[0]
        if op == OP_LOAD or op == OP_COPY_OBJECT:
            classes.join(ops[1], ops[2])
        elif op == OP_STORE:
            classes.join(ops[0], ops[1])
        elif op == OP_PHI:
            for value in ops[2::2]:
                classes.join(ops[1], value)
        elif op == OP_SELECT:
            classes.join(ops[1], ops[3])
            classes.join(ops[1], ops[4])
        elif op == NV_MULADD:
            classes.join(ops[1], ops[4])
            for place, value in zip("ABC", ops[2:5]):
                r = classes.find(value)
                if role.get(r, place) != place:
                    sys.exit("spirv_khr: a matrix is used both as %s and %s" % (role[r], place))
                role[r] = place
    role = {classes.find(k): v for k, v in role.items()}

    def role_of(value):
        return role.get(classes.find(value))

    # A KHR type per (NV type, use), the first use keeping the NV type's id;
    # a pointer type likewise.
    khr_type, khr_pointer, new_types = {}, {}, []
    uses = {}
    for value, t in type_of.items():
        base = pointers[t][2] if t in pointers else t
        if base in nv_types and role_of(value):
            uses.setdefault(base, set()).add(role_of(value))

    def new_id():
        nonlocal bound
        bound += 1
        return bound - 1

    new_constants = []

    def constant(value):
        if value not in constants:
            constants[value] = new_id()
            new_constants.append(encode(OP_CONSTANT, [uint, constants[value], value]))
        return constants[value]

    for t, places in uses.items():
        for i, place in enumerate(sorted(places)):
            khr_type[(t, place)] = t if i == 0 else new_id()
    for p, ops in pointers.items():
        for (t, place), k in khr_type.items():
            if t == ops[2]:
                khr_pointer[(p, place)] = p if k == t else new_id()

    def retype(t, value):
        place = role_of(value)
        if t in nv_types:
            return khr_type.get((t, place), t)
        if t in pointers:
            return khr_pointer.get((t, place), t)
        return t

    for place in "ABC":
        constant(ROLES[place])
    constant(0)
    constant(1)
    out = []
    for op, ops in insts:
        if op == OP_CAPABILITY and ops == [CAP_NV]:
            out.append(encode(op, [CAP_KHR]))
        elif op == OP_EXTENSION and ops == string_words("SPV_NV_cooperative_matrix"):
            out.append(encode(op, string_words("SPV_KHR_cooperative_matrix")))
        elif op == NV_TYPE:
            out += new_constants
            new_constants.clear()
            t = ops[0]
            for (base, place), k in sorted(khr_type.items(), key=lambda kv: kv[1]):
                if base == t:
                    out.append(encode(KHR_TYPE, [k] + ops[1:5] + [constants[ROLES[place]]]))
            if not any(base == t for base, _ in khr_type):
                sys.exit("spirv_khr: matrix type %d is never multiplied" % t)
        elif op == OP_TYPE_POINTER and ops[0] in pointers:
            for (p, place), k in sorted(khr_pointer.items(), key=lambda kv: kv[1]):
                if p == ops[0]:
                    t = khr_type[(ops[2], place)]
                    out.append(encode(op, [k, ops[1], t]))
        elif op == NV_LOAD:
            layout = constant(1 if bools[ops[4]] else 0)
            out.append(encode(KHR_LOAD, [retype(ops[0], ops[1]), ops[1], ops[2], layout, ops[3]] +
                              ops[5:]))
        elif op == NV_STORE:
            layout = constant(1 if bools[ops[3]] else 0)
            out.append(encode(KHR_STORE, [ops[0], ops[1], layout, ops[2]] + ops[4:]))
        elif op == NV_MULADD:
            out.append(encode(KHR_MULADD, [retype(ops[0], ops[1])] + ops[1:]))
        elif op == NV_LENGTH:
            out.append(encode(KHR_LENGTH, ops[:2] + [khr_type[(ops[2], "A")]]))
        elif typed_result(op, ops):
            out.append(encode(op, [retype(ops[0], ops[1])] + ops[1:]))
        else:
            out.append(encode(op, ops))
    if new_constants:
        sys.exit("spirv_khr: constants left unplaced")
    header = words[:5]
    header[3] = bound
    return header + [w for inst in out for w in inst]


def verify(words):
    insts = list(instructions(words))
    types = {ops[0]: ops for op, ops in insts if op == KHR_TYPE}
    consts = {ops[1]: ops[2] for op, ops in insts if op == OP_CONSTANT}
    type_of = {}
    for op, ops in insts:
        if op in (NV_TYPE, NV_LOAD, NV_STORE, NV_MULADD, NV_LENGTH) or (
                op == OP_CAPABILITY and ops == [CAP_NV]):
            sys.exit("spirv_khr: NV instruction %d left" % op)
        t = typed_result(op, ops)
        if t:
            type_of[t[1]] = t[0]
        if op == KHR_LOAD:
            type_of[ops[1]] = ops[0]
    if not any(op == OP_CAPABILITY and ops == [CAP_KHR] for op, ops in insts):
        sys.exit("spirv_khr: no CooperativeMatrixKHR capability")
    muladds = 0
    for op, ops in insts:
        if op != KHR_MULADD:
            continue
        muladds += 1
        for use, value in zip((USE_A, USE_B, USE_ACCUMULATOR, USE_ACCUMULATOR),
                              (ops[2], ops[3], ops[4], ops[1])):
            t = type_of[value] if value != ops[1] else ops[0]
            if consts[types[t][5]] != use:
                sys.exit("spirv_khr: a multiply-add operand has use %d, not %d" %
                         (consts[types[t][5]], use))
    if not muladds:
        sys.exit("spirv_khr: no multiply-add")
    return len(types), muladds


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    words = rewrite(words_of(sys.argv[1]))
    verify(words)
    rows = [",".join("0x%08x" % w for w in words[i:i + 4]) for i in range(0, len(words), 4)]
    with open(sys.argv[2], "w") as f:
        f.write("{" + ",\n".join(rows) + "}\n")


if __name__ == "__main__":
    main()

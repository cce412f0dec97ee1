/* Linked into the tests and vkmoe-run only under AddressSanitizer.
 *
 * lavapipe's LLVM JIT registers the unwind tables of every compiled shader
 * with libgcc (__register_frame). The first unwind after that sorts them while
 * holding libgcc's object lock, and the sort calls malloc; with
 * ASAN_OPTIONS=fast_unwind_on_malloc=0 (needed to name the one lavapipe leak
 * we suppress), ASan unwinds inside that malloc, re-enters the lock and the
 * process deadlocks. Nothing unwinds through shader code, so dropping the
 * registration costs nothing: ASan's stacks simply end at JIT frames. */
void __register_frame(void *begin);
void __deregister_frame(void *begin);

void __register_frame(void *begin) { (void)begin; }
void __deregister_frame(void *begin) { (void)begin; }

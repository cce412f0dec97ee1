/* Linked into the tests and vkmoe-run only under AddressSanitizer.
 *
 * Nothing is unloaded. The Vulkan loader unloads the driver (and with it
 * libraries it brought in) when an instance goes; a library that allocated
 * a buffer once and kept it in a global, as one of lavapipe's dependencies
 * does in a pthread_once, then shows that buffer to LeakSanitizer as a
 * leak: nothing points at it any more. Kept loaded, the buffer stays
 * reachable, so no suppression is needed, and no slow unwinding on every
 * malloc to name one (which made the sanitized suite several times slower:
 * LLVM allocates heavily compiling every pipeline).
 *
 * lavapipe's LLVM JIT registers the unwind tables of every compiled shader
 * with libgcc (__register_frame). The first unwind after that sorts them
 * while holding libgcc's object lock, and the sort calls malloc; run with
 * ASAN_OPTIONS=fast_unwind_on_malloc=0, ASan unwinds inside that malloc,
 * re-enters the lock and the process deadlocks. Nothing unwinds through
 * shader code, so dropping the registration costs nothing. */
int dlclose(void *handle);
void __register_frame(void *begin);
void __deregister_frame(void *begin);

int dlclose(void *handle)
{
    (void)handle;
    return 0;
}

void __register_frame(void *begin) { (void)begin; }
void __deregister_frame(void *begin) { (void)begin; }

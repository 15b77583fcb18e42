// pidfd_open and pidfd_getfd (glibc 2.36+), which the Glibc module does not import: the tests read
// socket options back from the sockets of the process under test.
#include <sys/pidfd.h>

/*
 * deny-open PATH...: refuses every open of the given files and directories with EPERM, as
 * an on-access scanner or a security agent on a source server does, through fanotify
 * permission events (FAN_OPEN_PERM; root, a kernel with CONFIG_FANOTIFY_ACCESS_PERMISSIONS).
 * deny-open --reads N PATH...: lets the files be opened and the first N reads of them
 * through, then refuses every read (FAN_ACCESS_PERM), as a disk does past a bad sector.
 * Prints "ready"
 * once the files are marked, then answers until it gets SIGTERM or its stdin closes; the
 * kernel allows whatever is pending when it exits. Built and used by the tests of a pass
 * over files the agent cannot read (test/support/deny-open.ts).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int reads = argc > 2 && strcmp(argv[1], "--reads") == 0; /* refuse reads, not opens */
  long let_through = reads ? atol(argv[2]) : 0;               /* reads allowed first */
  int first = reads ? 3 : 1;
  if (argc <= first) return 2;
  uint64_t mask = reads ? FAN_ACCESS_PERM : FAN_OPEN_PERM | FAN_ONDIR;
  int fan = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY);
  if (fan < 0) {
    perror("fanotify_init");
    return 3;
  }
  for (int i = first; i < argc; i++) {
    if (fanotify_mark(fan, FAN_MARK_ADD, mask, AT_FDCWD, argv[i]) != 0) {
      perror(argv[i]);
      return 4;
    }
  }
  printf("ready\n");
  fflush(stdout);
  struct pollfd fds[2] = {{.fd = fan, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
  char buf[8192] __attribute__((aligned(8)));
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 5;
    }
    if (fds[1].revents) return 0; /* stdin closed (or written to): done */
    ssize_t n = read(fan, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return 6;
    }
    struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
    for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
      if (m->fd < 0) continue;
      int deny = let_through <= 0;
      if (!deny) let_through--;
      struct fanotify_response r = {.fd = m->fd, .response = deny ? FAN_DENY : FAN_ALLOW};
      if (write(fan, &r, sizeof r) != sizeof r) perror("response");
      close(m->fd);
    }
  }
}

/*
 * floor.c: the kernel floor of sipconf's media I/O model, nothing else.
 *
 * For N participants it makes exactly the syscalls the server's mixer makes
 * per 20 ms tick (mixer/engine.py MediaEngine._run / _tick / _receive_all)
 * and no audio work: so "server CPU / floor CPU" per participant-tick says
 * how much the Python on top of the kernel costs (issue 15: target <= 2).
 *
 *   - one UDP socket per participant bound on 127.0.0.1 (the server's
 *     RtpEndpoint: one port per call), non-blocking, all in ONE epoll set
 *     (the engine's _rx_poll, separate from the event loop's);
 *   - every tick: up to RX_ROUNDS rounds of epoll_wait(timeout 0) and one
 *     recvfrom per ready socket per round (_receive_all); the latest 172-byte
 *     payload is kept per participant (the jitter ring's slice copy) and the
 *     sender's address is remembered (the latch);
 *   - then one sendto per latched participant of a 172-byte RTP packet
 *     (12-byte header, seq +1 and timestamp +160 per tick, 160 bytes of
 *     payload) to that address (the cached send list of _tick);
 *   - between ticks it sleeps to the next 20 ms deadline, start + n * 20 ms
 *     (mixer/clock.py TickClock: drift free; more than 3 ticks behind it
 *     skips ahead instead of bursting).
 *
 * Usage (compiled at run time, never committed as a binary):
 *   gcc -O2 -o floor scripts/floor/floor.c
 *   floor --seconds S --count N [--base PORT [--step K]]   N ports from PORT
 *                                                           (PORT 0: any free)
 *   floor --seconds S --ports P1,P2,...
 * Prints "ports P1 P2 ..." once bound (stdout, flushed), runs S seconds or
 * until SIGTERM/SIGINT, then prints one JSON line of its own counts.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RX_ROUNDS 16     /* mixer/engine.py RX_ROUNDS */
#define PERIOD_NS 20000000LL
#define MAX_LATE_TICKS 3 /* mixer/clock.py TickClock.max_late_ticks */
#define HEADER 12
#define FRAME 160
#define PACKET (HEADER + FRAME)
#define RXBUF 2048       /* the engine's one receive buffer (_RX_SIZE) */
#define MAX_PARTICIPANTS 20000

struct participant {
    int fd;
    int port;
    int latched;                    /* an address to send to has been seen */
    struct sockaddr_in addr;        /* the latch: the last sender */
    unsigned char payload[FRAME];   /* the latest 160 bytes received */
    unsigned char packet[PACKET];   /* the outgoing packet, header updated per tick */
    uint16_t seq;
    uint32_t ts;
    unsigned long rx, tx;
};

static volatile sig_atomic_t stop_now = 0;

static void on_signal(int sig) { (void)sig; stop_now = 1; }

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void usage(void) {
    fprintf(stderr, "usage: floor --seconds S (--count N [--base PORT] [--step K] | --ports P1,P2,...)\n");
    exit(2);
}

int main(int argc, char **argv) {
    double seconds = 10.0;
    int count = 0, base = 0, step = 1;
    char *ports_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--count")) count = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--base")) base = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--step")) step = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ports")) ports_arg = argv[++i];
        else usage();
    }
    int wanted[MAX_PARTICIPANTS];
    if (ports_arg) {
        count = 0;
        for (char *p = strtok(ports_arg, ","); p; p = strtok(NULL, ",")) {
            if (count >= MAX_PARTICIPANTS) usage();
            wanted[count++] = atoi(p);
        }
    } else {
        if (count > MAX_PARTICIPANTS || step < 1) usage();
        for (int i = 0; i < count; i++) wanted[i] = base ? base + i * step : 0;
    }
    if (count < 1 || seconds <= 0 || seconds > 3600) usage();

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;  /* no SA_RESTART: a signal ends the sleep */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct participant *ps = calloc((size_t)count, sizeof *ps);
    struct epoll_event *events = calloc((size_t)count + 8, sizeof *events);
    int ep = epoll_create1(0);
    if (!ps || !events || ep < 0) { perror("floor: setup"); return 1; }
    uint32_t ssrc_seed = (uint32_t)now_ns();
    for (int i = 0; i < count; i++) {
        struct participant *p = &ps[i];
        p->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)wanted[i])};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (p->fd < 0 || bind(p->fd, (struct sockaddr *)&a, sizeof a) < 0) {
            fprintf(stderr, "floor: cannot bind 127.0.0.1:%d: %s\n", wanted[i], strerror(errno));
            return 1;
        }
        socklen_t len = sizeof a;
        getsockname(p->fd, (struct sockaddr *)&a, &len);
        p->port = ntohs(a.sin_port);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &ev) < 0) { perror("floor: epoll_ctl"); return 1; }
        /* the header of RtpSender: v2, PT 8 (PCMA), a random start, own SSRC */
        p->seq = (uint16_t)(ssrc_seed * 7 + (uint32_t)i);
        p->ts = ssrc_seed * 13 + (uint32_t)i * 160u;
        p->packet[0] = 0x80;
        p->packet[1] = 8;
        uint32_t ssrc = htonl(ssrc_seed ^ (uint32_t)(i * 2654435761u));
        memcpy(p->packet + 8, &ssrc, 4);
        memset(p->payload, 0xD5, FRAME);  /* A-law silence until something arrives */
    }
    printf("ports");
    for (int i = 0; i < count; i++) printf(" %d", ps[i].port);
    printf("\n");
    fflush(stdout);

    unsigned char buf[RXBUF];
    int64_t t0 = now_ns(), end = t0 + (int64_t)(seconds * 1e9);
    int64_t n = 0;  /* index of the next tick: due at t0 + n * PERIOD */
    unsigned long ticks = 0, skipped = 0, late_ticks = 0, rx_total = 0, tx_total = 0, send_errors = 0;
    int64_t max_late = 0;
    while (!stop_now) {
        /* sleep to the next deadline (TickClock.delay + asyncio.sleep) */
        int64_t due = t0 + n * PERIOD_NS;
        struct timespec ts = {.tv_sec = due / 1000000000LL, .tv_nsec = due % 1000000000LL};
        while (!stop_now && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
        if (stop_now) break;
        int64_t t = now_ns();
        if (t >= end) break;
        int64_t late = t - due;  /* TickClock.begin_tick: skip ahead when far behind */
        if (late > MAX_LATE_TICKS * PERIOD_NS) {
            int64_t current = (t - t0) / PERIOD_NS;
            skipped += (unsigned long)(current - n);
            n = current;
            late = t - (t0 + n * PERIOD_NS);
        }
        if (late > max_late) max_late = late;
        if (late > PERIOD_NS) late_ticks++;
        n++;
        ticks++;

        /* receive: _receive_all, one epoll_wait(0) per round, one recvfrom per ready socket */
        for (int round = 0; round < RX_ROUNDS; round++) {
            int ready = epoll_wait(ep, events, count + 8, 0);
            if (ready <= 0) break;
            for (int e = 0; e < ready; e++) {
                struct participant *p = &ps[events[e].data.u32];
                struct sockaddr_in from;
                socklen_t len = sizeof from;
                ssize_t got = recvfrom(p->fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
                if (got < 0) continue;  /* spurious readiness, as the engine's OSError */
                rx_total++;
                p->rx++;
                if (got == PACKET) memcpy(p->payload, buf + HEADER, FRAME);  /* the ring's slice copy */
                p->addr = from;  /* latch onto the sender */
                p->latched = 1;
            }
        }

        /* send: one packet per latched participant, header fields advanced per tick */
        for (int i = 0; i < count; i++) {
            struct participant *p = &ps[i];
            if (!p->latched) continue;
            uint16_t seq = htons(p->seq++);
            uint32_t ts32 = htonl(p->ts);
            p->ts += FRAME;
            memcpy(p->packet + 2, &seq, 2);
            memcpy(p->packet + 4, &ts32, 4);
            memcpy(p->packet + HEADER, p->payload, FRAME);
            if (sendto(p->fd, p->packet, PACKET, 0, (struct sockaddr *)&p->addr, sizeof p->addr) == PACKET) {
                p->tx++;
                tx_total++;
            } else {
                send_errors++;
            }
        }
    }
    double elapsed = (double)(now_ns() - t0) / 1e9;
    unsigned long rx_min = ~0UL, rx_max = 0;
    for (int i = 0; i < count; i++) {
        if (ps[i].rx < rx_min) rx_min = ps[i].rx;
        if (ps[i].rx > rx_max) rx_max = ps[i].rx;
        close(ps[i].fd);
    }
    printf("{\"participants\": %d, \"elapsed_s\": %.3f, \"ticks\": %lu, \"skipped\": %lu, \"late_ticks\": %lu, "
           "\"max_late_ms\": %.3f, \"rx\": %lu, \"tx\": %lu, \"send_errors\": %lu, "
           "\"rx_min_per_participant\": %lu, \"rx_max_per_participant\": %lu, \"signal\": %s}\n",
           count, elapsed, ticks, skipped, late_ticks, (double)max_late / 1e6, rx_total, tx_total, send_errors,
           rx_min, rx_max, stop_now ? "true" : "false");
    fflush(stdout);
    close(ep);
    free(ps);
    free(events);
    return 0;
}

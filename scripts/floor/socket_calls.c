/*
 * socket_calls.c: what one send and one recv cost in C on this kernel, for
 * scripts/bench_socket_calls.py to set beside the same calls made from
 * Python (socket.send / sendto / recv_into), on the same sockets layout.
 *
 * N pairs of UDP sockets on 127.0.0.1 (non-blocking); the sender of pair i
 * connected to its receiver (--connected) or not (sendto). Each round: one
 * 172-byte packet per pair (timed), one recv per receiver (timed), then the
 * receivers drained (not timed), so no queue grows and every recv finds a
 * packet waiting.
 *
 *   gcc -O2 -o socket_calls scripts/floor/socket_calls.c
 *   socket_calls N ROUNDS connected|sendto
 * Prints one JSON line: {"send_us": ..., "recv_us": ...}.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PACKET 172

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: socket_calls N ROUNDS connected|sendto\n");
        return 2;
    }
    int n = atoi(argv[1]), rounds = atoi(argv[2]);
    int connected = strcmp(argv[3], "connected") == 0;
    if (n <= 0 || rounds <= 0) {
        fprintf(stderr, "N and ROUNDS must be positive\n");
        return 2;
    }
    int *tx = calloc(n, sizeof *tx), *rx = calloc(n, sizeof *rx);
    struct sockaddr_in *to = calloc(n, sizeof *to);
    for (int i = 0; i < n; i++) {
        struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
        socklen_t len = sizeof to[i];
        rx[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        tx[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (rx[i] < 0 || tx[i] < 0 || bind(rx[i], (void *)&any, sizeof any) || bind(tx[i], (void *)&any, sizeof any)
            || getsockname(rx[i], (void *)&to[i], &len) || (connected && connect(tx[i], (void *)&to[i], sizeof to[i]))) {
            perror("socket set-up");
            return 1;
        }
    }
    char packet[PACKET] = {(char)0x80}, buf[2048];
    double send_s = 0, recv_s = 0;
    long sent = 0, received = 0;
    for (int r = 0; r < rounds; r++) {
        double t = now();
        for (int i = 0; i < n; i++) {
            ssize_t k = connected ? send(tx[i], packet, PACKET, 0)
                                  : sendto(tx[i], packet, PACKET, 0, (void *)&to[i], sizeof to[i]);
            sent += k == PACKET;
        }
        double u = now();
        for (int i = 0; i < n; i++)
            received += recv(rx[i], buf, sizeof buf, 0) > 0;
        recv_s += now() - u;
        send_s += u - t;
        for (int i = 0; i < n; i++)
            while (recv(rx[i], buf, sizeof buf, 0) > 0) {
            }
    }
    printf("{\"send_us\": %.3f, \"recv_us\": %.3f, \"sent\": %ld, \"received\": %ld}\n",
           send_s / ((double)n * rounds) * 1e6, recv_s / ((double)n * rounds) * 1e6, sent, received);
    return 0;
}

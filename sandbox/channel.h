/* Generated from sandbox/channel.py by `python3 -m sandbox.channel`: do not edit. */
#ifndef PYSANDBOX_CHANNEL_H
#define PYSANDBOX_CHANNEL_H
/* E: stage errno message */
#define CHANNEL_ERROR "E"
#define CHANNEL_ERROR_FIELDS 3
/* W: text */
#define CHANNEL_WARNING "W"
#define CHANNEL_WARNING_FIELDS 1
/* X: pid nr arch */
#define CHANNEL_SECCOMP_KILL "X"
#define CHANNEL_SECCOMP_KILL_FIELDS 3
/* S: wait_status */
#define CHANNEL_STATUS "S"
#define CHANNEL_STATUS_FIELDS 1
#endif

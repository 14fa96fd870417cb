#ifndef CLIBRE_SHIM_H
#define CLIBRE_SHIM_H
// libre (Debian libre-dev 1.1.0, baresip's SIP/SDP library), used only by ChamadeSIP.
// Debian's libre.pc sets none of the feature macros the headers test: without these,
// re_types.h misses the fixed-width types, bool, and struct sa has no IPv6 member.
#define HAVE_INTTYPES_H 1
#define HAVE_STDBOOL_H 1
#define HAVE_INET6 1
#include <re.h>

// Swift cannot call C variadic functions: each one used gets a one-line typed wrapper
// (prefixed clibre_). Extra SIP headers, where a wrapper takes them, are passed whole
// ("Name: value\r\n" lines, or "" for none) through "%s".
static inline int clibre_sip_transp_add_udp(struct sip *sip, const struct sa *laddr) { return sip_transp_add(sip, SIP_TRANSP_UDP, laddr); }
static inline int clibre_sip_replyf(struct sip *sip, const struct sip_msg *msg, uint16_t scode, const char *reason, const char *hdrs) { return sip_replyf(sip, msg, scode, reason, "%sContent-Length: 0\r\n\r\n", hdrs); }
static inline int clibre_sipsess_accept(struct sipsess **sessp, struct sipsess_sock *sock, const struct sip_msg *msg, uint16_t scode, const char *reason, const char *cuser, const char *ctype, struct mbuf *desc, sip_auth_h *authh, void *aarg, bool aref, sipsess_offer_h *offerh, sipsess_answer_h *answerh, sipsess_estab_h *estabh, sipsess_info_h *infoh, sipsess_refer_h *referh, sipsess_close_h *closeh, void *arg, const char *hdrs) { return sipsess_accept(sessp, sock, msg, scode, reason, cuser, ctype, desc, authh, aarg, aref, offerh, answerh, estabh, infoh, referh, closeh, arg, "%s", hdrs); }
static inline int clibre_sipsess_progress(struct sipsess *sess, uint16_t scode, const char *reason, struct mbuf *desc, const char *hdrs) { return sipsess_progress(sess, scode, reason, desc, "%s", hdrs); }
static inline int clibre_sipsess_answer(struct sipsess *sess, uint16_t scode, const char *reason, struct mbuf *desc, const char *hdrs) { return sipsess_answer(sess, scode, reason, desc, "%s", hdrs); }
// sipsess_reject writes exactly the format it is given: the empty body is ours to close.
static inline int clibre_sipsess_reject(struct sipsess *sess, uint16_t scode, const char *reason, const char *hdrs) { return sipsess_reject(sess, scode, reason, "%sContent-Length: 0\r\n\r\n", hdrs); }
static inline int clibre_sipsess_connect(struct sipsess **sessp, struct sipsess_sock *sock, const char *to_uri, const char *from_name, const char *from_uri, const char *cuser, const char *ctype, struct mbuf *desc, sip_auth_h *authh, void *aarg, bool aref, sipsess_offer_h *offerh, sipsess_answer_h *answerh, sipsess_progr_h *progrh, sipsess_estab_h *estabh, sipsess_info_h *infoh, sipsess_refer_h *referh, sipsess_close_h *closeh, void *arg, const char *hdrs) { return sipsess_connect(sessp, sock, to_uri, from_name, from_uri, cuser, NULL, 0, ctype, desc, authh, aarg, aref, offerh, answerh, progrh, estabh, infoh, referh, closeh, arg, "%s", hdrs); }
static inline int clibre_sipreg_register(struct sipreg **regp, struct sip *sip, const char *reg_uri, const char *to_uri, const char *from_name, const char *from_uri, uint32_t expires, const char *cuser, sip_auth_h *authh, void *aarg, sip_resp_h *resph, void *arg) { return sipreg_register(regp, sip, reg_uri, to_uri, from_name, from_uri, expires, cuser, NULL, 0, 0, authh, aarg, true, resph, arg, NULL, "%s", ""); }
// SDP building (for the offer/answer of issue 10): a format with optional fmtp params, a media attribute.
static inline int clibre_sdp_format_add(struct sdp_format **fmtp, struct sdp_media *m, bool prepend, const char *id, const char *name, uint32_t srate, uint8_t ch, const char *params) { return params ? sdp_format_add(fmtp, m, prepend, id, name, srate, ch, NULL, NULL, NULL, false, "%s", params) : sdp_format_add(fmtp, m, prepend, id, name, srate, ch, NULL, NULL, NULL, false, NULL); }
static inline int clibre_sdp_media_set_lattr(struct sdp_media *m, bool replace, const char *name, const char *value) { return value ? sdp_media_set_lattr(m, replace, name, "%s", value) : sdp_media_set_lattr(m, replace, name, NULL); }
#endif

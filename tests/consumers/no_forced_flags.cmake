# calm::calm must not impose compile options (-march, warning flags) on a consumer's code.
get_target_property(calm_opts calm::calm INTERFACE_COMPILE_OPTIONS)
if(calm_opts)
  message(FATAL_ERROR "calm::calm forces compile options on its users: ${calm_opts}")
endif()
